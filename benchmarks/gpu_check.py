"""GPU check: the NVML snapshot of this machine's NVIDIA GPUs, the plans `quant-tui recommend` makes, and GPU quantization.

For a machine with an NVIDIA GPU, PyTorch and nvidia-ml-py, quant-tui's own dependencies
(``pip install -e .``), but no vLLM and no network. It reads the GPUs through engine/hardware's one
NVML door, cross-checks them with PyTorch's CUDA view when PyTorch is there, and plans real models
config-only from the ``config.json`` files bundled in ``tests/fixtures/configs`` (the demo model
would need building, so it is not used). Where PyTorch sees a CUDA GPU it then builds a random
bf16 Llama locally (benchmarks/bench_quantize.py's builder, ``--quantize-gb``), quantizes it with
each of ``--quantize-methods`` on the GPU and on the CPU, copies it, and prints the time ratios
(GPU/CPU, GPU/copy, CPU/copy, each run from a cold page cache) and whether both wrote the same bits.
The plans take a few seconds, the quantization a minute or two::

    python benchmarks/gpu_check.py                      # compact report
    python benchmarks/gpu_check.py --config deepseek-v3 --max-model-len 32768
    python benchmarks/gpu_check.py --json               # one JSON object
    python benchmarks/gpu_check.py --quantize-gb 0      # plans only

Exit status: 0 when NVML sees at least one NVIDIA GPU and every plan was made; 1 when there is no
NVIDIA GPU (the report says so and why, e.g. "no NVIDIA driver loaded"); 2 on bad input; 3 when a
GPU quantization wrote other bits than the CPU's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(REPO))

from engine.errors import QuantTuiError  # noqa: E402
from engine.hardware.detect import HardwareSnapshot, detect_hardware, target_from_snapshot  # noqa: E402
from engine.hardware.nvml import NvmlLibrary  # noqa: E402
from engine.units import format_bytes  # noqa: E402

CONFIGS = REPO / "tests" / "fixtures" / "configs"
DEFAULT_CONFIGS = ("llama-3.1-8b", "qwen3-30b-a3b", "gpt-oss-20b")
DEFAULT_QUANTIZE_METHODS = ("fp8", "w4a16", "nvfp4a16")


def nvml_report(snapshot: HardwareSnapshot) -> dict[str, Any]:
    """The NVML snapshot as plain data: driver, CUDA, and one entry per GPU."""
    from engine.hardware.gpu_catalog import match_detected_name

    gpus = []
    for gpu in snapshot.gpus:
        entry = match_detected_name(gpu.name)
        gpus.append(
            {
                "index": gpu.index,
                "name": gpu.name,
                "catalogue": entry.name if entry else None,
                "compute_capability": ".".join(map(str, gpu.compute_capability))
                if gpu.compute_capability
                else None,
                "memory_total_bytes": gpu.memory_total_bytes,
                "memory_used_bytes": gpu.memory_used_bytes,
                "memory_free_bytes": gpu.memory_free_bytes,
                "utilization_percent": gpu.utilization_percent,
                "temperature_c": gpu.temperature_c,
                "power_w": gpu.power_w,
                "power_limit_w": gpu.power_limit_w,
                "mig_mode": gpu.mig_mode,
            }
        )
    return {
        "nvml_status": snapshot.nvml_status,
        "driver_version": snapshot.driver_version,
        "cuda_driver_version": snapshot.cuda_driver_version,
        "gpus": gpus,
    }


def torch_report() -> dict[str, Any]:
    """PyTorch's view of CUDA (devices, capability, free memory), or why there is none."""
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "PyTorch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": f"torch {torch.__version__} sees no CUDA device"}
    devices = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        devices.append(
            {
                "index": index,
                "name": torch.cuda.get_device_name(index),
                "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(index)),
                "memory_free_bytes": int(free),
                "memory_total_bytes": int(total),
            }
        )
    return {"available": True, "torch": torch.__version__, "cuda": torch.version.cuda, "devices": devices}


def plan_report(snapshot: HardwareSnapshot, config: str, max_model_len: int) -> dict[str, Any]:
    """The plan ``recommend`` makes for the bundled ``config`` on the detected GPUs."""
    from engine.model.inspect_model import inspect_model
    from engine.plan.recommender import PlanRequest, recommend

    source = CONFIGS / f"{config}.json"
    if not source.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise QuantTuiError(f"no bundled config {config!r}", f"choose one of {known}")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        folder = Path(scratch) / config  # the plan names the model folder after the config
        folder.mkdir()
        shutil.copy(source, folder / "config.json")
        model = inspect_model(folder)
        result = recommend(model, target_from_snapshot(snapshot), PlanRequest(max_model_len=max_model_len))
    best = result.best
    memory = best.plan.gpu_memory
    return {
        "config": config,
        "params": model.params,
        "method": best.method,
        "execution": best.execution,
        "fits": best.fits,
        "tensor_parallel_size": best.tensor_parallel_size,
        "machines_needed": best.machines_needed,
        "max_model_len": result.max_model_len,
        "kv_cache_dtype": best.kv_cache_dtype,
        "kv_cache_tokens": best.kv_cache_tokens,
        "max_concurrency": best.max_concurrency,
        "weights_bytes_per_gpu": best.plan.weights_bytes,
        "memory": None
        if memory is None
        else {
            "requested_bytes": memory.requested_bytes,
            "activation_peak_bytes": memory.activation_peak_bytes,
            "non_torch_bytes": memory.non_torch_bytes,
            "cudagraph_bytes": memory.cudagraph_bytes,
            "kv_cache_bytes": memory.kv_cache_bytes,
        },
        "command": best.server.command_line(),
        "warnings": list(best.warnings),
    }


def output_digest(folder: Path) -> str:
    """A hash of the checkpoint's tensor files, to tell two runs wrote the same bits."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _timed_quantize(source: Path, method: str, device: str, output: Path) -> dict[str, Any]:
    """One run from a cold page cache: seconds, peaks, the dry run's estimates, and the output's hash."""
    from benchmarks.bench_quantize import evict
    from engine.quantize.estimate import estimate
    from engine.quantize.request import QuantizeRequest
    from engine.quantize.runner import quantize_model

    shutil.rmtree(output, ignore_errors=True)
    request = QuantizeRequest(source, method, output=output, device=device)
    cost = estimate(request)
    evict(source)
    started = time.monotonic()
    report = quantize_model(request)
    seconds = time.monotonic() - started
    digest = output_digest(output)
    shutil.rmtree(output)
    return {
        "device": report.device,
        "seconds": seconds,
        "peak_gpu_bytes": report.peak_gpu_bytes,
        "estimated_peak_gpu_bytes": cost.peak_gpu_bytes,
        "digest": digest,
    }


def quantize_report(
    methods: list[str], size_gb: float, workdir: Path, accelerator: str = "cuda", source: Path | None = None
) -> dict[str, Any]:
    """Each method on ``accelerator`` and on the CPU against a plain copy of the (built) model.

    ``source`` is a model folder to use instead of building a ``size_gb`` GB random Llama.
    """
    from benchmarks.bench_quantize import build_checkpoint, plain_copy

    started = time.monotonic()
    if source is None:
        source = workdir / "gpu-check-llama"
        build_checkpoint(source, size_gb, single_shard=True)
    model_bytes = sum(path.stat().st_size for path in source.glob("*.safetensors"))
    built_seconds = time.monotonic() - started
    copy_seconds = plain_copy(source, workdir / "plain-copy")
    runs = []
    for method in methods:
        on_device = _timed_quantize(source, method, accelerator, workdir / f"out-{method}-{accelerator}")
        on_cpu = _timed_quantize(source, method, "cpu", workdir / f"out-{method}-cpu")
        estimated, measured = on_device["estimated_peak_gpu_bytes"], on_device["peak_gpu_bytes"]
        runs.append(
            {
                "method": method,
                "device": on_device["device"],
                "device_seconds": on_device["seconds"],
                "cpu_seconds": on_cpu["seconds"],
                "device_over_cpu": on_device["seconds"] / on_cpu["seconds"],
                "device_over_copy": on_device["seconds"] / copy_seconds,
                "cpu_over_copy": on_cpu["seconds"] / copy_seconds,
                "same_bits": on_device["digest"] == on_cpu["digest"],
                "peak_gpu_bytes": measured,
                "estimated_peak_gpu_bytes": estimated,
                "gpu_estimate_over_peak": estimated / measured if measured else None,
            }
        )
    return {
        "model": str(source),
        "model_bytes": model_bytes,
        "built_seconds": built_seconds,
        "copy_seconds": copy_seconds,
        "runs": runs,
    }


def print_quantize(report: dict[str, Any]) -> None:
    """The quantization lines of the text report."""
    if "skipped" in report:
        print(f"quantize on the GPU: not measured, {report['skipped']}")
        return
    print(
        f"quantize {Path(report['model']).name} ({report['model_bytes'] / 1e9:.2f} GB bf16, ready in "
        f"{report['built_seconds']:.0f} s): plain copy {report['copy_seconds']:.1f} s (cold cache, fsynced)"
    )
    for run in report["runs"]:
        estimate = run["gpu_estimate_over_peak"]
        print(
            f"  {run['method']:<9} {run['device']} {run['device_seconds']:.1f} s, cpu {run['cpu_seconds']:.1f} s: "
            f"gpu/cpu {run['device_over_cpu']:.2f}, gpu/copy {run['device_over_copy']:.2f}, "
            f"cpu/copy {run['cpu_over_copy']:.2f}; same bits: {'yes' if run['same_bits'] else 'NO'}; "
            f"GPU peak {format_bytes(run['peak_gpu_bytes'], 'MiB')}"
            + (f" (estimate/peak {estimate:.2f})" if estimate is not None else "")
        )


def print_report(report: dict[str, Any]) -> None:
    """The compact text report."""
    nvml = report["nvml"]
    print(
        f"NVML: driver {nvml['driver_version']}, CUDA {nvml['cuda_driver_version']}, {len(nvml['gpus'])} GPU(s)"
    )
    for gpu in nvml["gpus"]:
        used = format_bytes(gpu["memory_used_bytes"], "MiB")
        total = format_bytes(gpu["memory_total_bytes"], "MiB")
        print(
            f"  [{gpu['index']}] {gpu['name']} (catalogue: {gpu['catalogue'] or 'unknown'}), "
            f"compute {gpu['compute_capability']}, {used} used of {total}, "
            f"util {gpu['utilization_percent']}%, {gpu['temperature_c']} °C, "
            f"{gpu['power_w']}/{gpu['power_limit_w']} W, MIG {gpu['mig_mode']}"
        )
    torch_view = report["torch"]
    if torch_view["available"]:
        print(f"PyTorch {torch_view['torch']} (CUDA {torch_view['cuda']}):")
        for device in torch_view["devices"]:
            print(
                f"  [{device['index']}] {device['name']}, compute {device['compute_capability']}, "
                f"{format_bytes(device['memory_free_bytes'], 'MiB')} free of "
                f"{format_bytes(device['memory_total_bytes'], 'MiB')}"
            )
    else:
        print(f"PyTorch: {torch_view['reason']}")
    for plan in report["plans"]:
        fits = "fits" if plan["fits"] else f"does not fit (machines needed: {plan['machines_needed']})"
        print(
            f"plan {plan['config']} ({plan['params'] / 1e9:.1f} B params, context {plan['max_model_len']}): "
            f"{plan['method']} ({plan['execution']}), TP {plan['tensor_parallel_size']}, {fits}, "
            f"weights {format_bytes(plan['weights_bytes_per_gpu'], 'MiB')}/GPU, "
            f"KV {plan['kv_cache_tokens']:,} tokens ({plan['kv_cache_dtype']}), "
            f"{plan['max_concurrency']:.2f}x concurrency"
        )
        if plan["memory"]:
            m = plan["memory"]
            print(
                f"  memory/GPU: requested {format_bytes(m['requested_bytes'], 'MiB')}, activation peak "
                f"{format_bytes(m['activation_peak_bytes'], 'MiB')}, non-torch "
                f"{format_bytes(m['non_torch_bytes'], 'MiB')}, CUDA graphs {format_bytes(m['cudagraph_bytes'], 'MiB')}"
                f", KV {format_bytes(m['kv_cache_bytes'], 'MiB')}"
            )
        print(f"  {plan['command']}")
        for warning in plan["warnings"]:
            print(f"  ! {warning}")
    if "quantize" in report:
        print_quantize(report["quantize"])


def main(argv: list[str] | None = None, nvml: NvmlLibrary | None = None) -> int:
    """Runs the check (``nvml``: the NVML door to read, the process-wide one by default); exit status as above."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", action="append", help=f"bundled config to plan (default: {', '.join(DEFAULT_CONFIGS)})"
    )
    parser.add_argument("--max-model-len", type=int, default=8192, help="context per request (default 8192)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--quantize-gb",
        type=float,
        default=1.0,
        help="size of the random Llama quantized on the GPU and the CPU (default 1; 0 skips it)",
    )
    parser.add_argument(
        "--quantize-methods",
        default=",".join(DEFAULT_QUANTIZE_METHODS),
        help=f"data-free methods to time (default {','.join(DEFAULT_QUANTIZE_METHODS)})",
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the model is built and quantized (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    from engine.quantize.request import DATA_FREE_METHODS

    methods = args.quantize_methods.split(",")
    unknown = [method for method in methods if method not in DATA_FREE_METHODS]
    if unknown:
        print(
            f"gpu_check: error: not a data-free method: {', '.join(unknown)}; use {', '.join(DATA_FREE_METHODS)}",
            file=sys.stderr,
        )
        return 2
    snapshot = detect_hardware(nvml)
    if not snapshot.gpus:
        message = f"no NVIDIA GPU: {snapshot.nvml_status}"
        print(json.dumps({"nvml": nvml_report(snapshot), "error": message}) if args.json else message)
        return 1
    report: dict[str, Any] = {"nvml": nvml_report(snapshot), "torch": torch_report()}
    try:
        report["plans"] = [
            plan_report(snapshot, name, args.max_model_len) for name in args.config or DEFAULT_CONFIGS
        ]
        if args.quantize_gb > 0:
            report["quantize"] = _quantize_section(methods, args.quantize_gb, args.workdir, report["torch"])
    except QuantTuiError as error:
        print(f"gpu_check: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    runs = report.get("quantize", {}).get("runs", [])
    return 3 if any(not run["same_bits"] for run in runs) else 0


def _quantize_section(
    methods: list[str], size_gb: float, workdir: Path | None, torch_view: dict[str, Any]
) -> dict[str, Any]:
    """The quantization figures, or why there are none (no CUDA device for PyTorch)."""
    if not torch_view["available"]:
        return {"skipped": torch_view["reason"]}
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return quantize_report(methods, size_gb, workdir)
    with tempfile.TemporaryDirectory(prefix="gpu-check-quantize-") as scratch:
        return quantize_report(methods, size_gb, Path(scratch))


if __name__ == "__main__":
    sys.exit(main())
