"""Fixed telemetry histories for the dashboard tests: fake NVML snapshots of 2 and 8 GPUs, a CPU server tree."""

from __future__ import annotations

import math

from engine.hardware.detect import GpuInfo, HostInfo
from engine.telemetry.derived_metrics import DerivedMetrics
from engine.telemetry.processes import ProcessSample
from engine.telemetry.snapshot import TelemetrySnapshot

GIB = 2**30
URL = "http://127.0.0.1:8000/metrics"
START = 1_800_000_000.0


def metrics(tick: int) -> DerivedMetrics:
    """A server under a load that ramps up and settles (deterministic, by tick)."""
    load = min(1.0, tick / 40)
    wave = 0.5 + 0.5 * math.sin(tick / 6)
    return DerivedMetrics(
        window_s=1.0,
        prompt_tokens_total=1000.0 * tick,
        generation_tokens_total=400.0 * tick,
        prompt_tokens_per_s=2400.0 * load * wave,
        generation_tokens_per_s=820.0 * load + 60 * wave,
        requests_running=round(12 * load),
        requests_waiting=round(4 * load * wave),
        kv_cache_usage=0.62 * load,
        kv_cache_capacity_tokens=287_344,
        prefix_cache_hit_rate=0.35 + 0.2 * wave if tick > 5 else None,
        preemptions_total=float(tick // 30),
        preemptions_per_s=1.0 if tick % 30 == 0 and tick else 0.0,
        finished_requests={"stop": float(tick)},
        finished_requests_in_window={"stop": 1.0},
        ttft_p50_s=0.045 + 0.03 * load,
        ttft_p95_s=0.090 + 0.08 * load * wave,
        itl_p50_s=0.011 + 0.004 * load,
        itl_p95_s=0.019 + 0.006 * load * wave,
        e2e_p50_s=1.2,
        e2e_p95_s=2.1,
    )


def gpus(count: int, tick: int) -> tuple[GpuInfo, ...]:
    """``count`` H100s, each a little busier and hotter than the one before."""
    total = 81_559 * 2**20
    return tuple(
        GpuInfo(
            index=index,
            name="NVIDIA H100 80GB HBM3",
            uuid=f"GPU-{index:08d}",
            compute_capability=(9, 0),
            memory_total_bytes=total,
            memory_used_bytes=(70 + index % 3) * GIB,
            memory_free_bytes=total - (70 + index % 3) * GIB,
            utilization_percent=float(min(100, 60 + 5 * index + tick % 7)),
            memory_utilization_percent=40.0,
            temperature_c=float(55 + 4 * index),
            power_w=float(300 + 45 * index),
            power_limit_w=700.0,
            mig_mode=False,
        )
        for index in range(count)
    )


HOST = HostInfo(
    cpu_model="Example CPU 64-Core",
    physical_cores=64,
    logical_cores=128,
    memory_total_bytes=512 * GIB,
    memory_available_bytes=384 * GIB,
    cpu_flags=frozenset({"avx2", "avx512f"}),
    cpu_percent=23.0,
)


def history(
    ticks: int = 90, gpu_count: int = 0, failed: tuple[int, ...] = (50, 51), dead_from: int | None = None
) -> list[TelemetrySnapshot]:
    """One snapshot per second; the ticks in ``failed`` are failed polls, and the server is dead from ``dead_from``."""
    snapshots = []
    for tick in range(ticks):
        dead = dead_from is not None and tick >= dead_from
        ok = tick not in failed and not dead
        server_gpu = tuple((64 + index % 3) * GIB for index in range(gpu_count))
        processes = (
            ()
            if dead
            else (
                ProcessSample(4242, "api_server", 3.0, 1_900 * 2**20),
                ProcessSample(4301, "VLLM::EngineCore", 97.0, 6_400 * 2**20),
            )
        )
        error = None
        if dead:
            error = "the vLLM engine process died (the server process, pid 4242, exited)"
        elif not ok:
            error = f"cannot reach {URL} (connection refused or no route); is the server running?"
        snapshots.append(
            TelemetrySnapshot(
                url=URL,
                wall_time=START + tick,
                taken_at=float(tick),
                poll_s=0.004,
                metrics=metrics(tick) if ok else None,
                gpus=gpus(gpu_count, tick),
                host=HOST,
                server_rss_bytes=None if dead else sum(process.rss_bytes for process in processes),
                server_alive=not dead,
                error=error,
                server_processes=processes,
                server_gpu_memory_bytes=server_gpu if not dead else (),
                engine_died=dead,
            )
        )
    return snapshots
