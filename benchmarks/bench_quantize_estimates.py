"""Benchmark of the ``--dry-run`` cost estimate: estimated vs measured peak RAM (and time) of every method, calibrated ones included.

Each method runs in a fresh child process (the one that estimated, then quantized, as ``quant-tui
quantize`` does); the resident memory of the child's whole process tree (llm-compressor's worker
included) is sampled every 20 ms, and the peak is set against the estimate. Models: the demo model
and a larger random Llama built locally (TinyLlama-like layers, about ``--size-gb``), which gets the
demo model's tokenizer so llm-compressor can calibrate it on the demo corpus.

Run it under the heavy-job lock::

    flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/bench_quantize_estimates.py --samples 8
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quantize import LLAMA_1B, build_checkpoint  # noqa: E402

DATA_FREE = "fp8,fp8-block,int8-w8a8,w8a16,w4a16,nvfp4a16"
CALIBRATED = "gptq-w4a16,awq-w4a16,smoothquant-int8,gptq-w8a16,nvfp4"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)
SAMPLE_SECONDS = 0.02
LOW, HIGH = 0.75, 1.25

# Estimates, then runs, in the same process (its RSS with torch imported is part of both). The
# seconds from the start to the first "calibrating" and "saving" progress split a calibrated run
# into start-up (worker start, imports, model load), calibration and saving.
CHILD = """
import json, sys, time
from pathlib import Path
import psutil
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model
from engine.quantize.estimate import estimate
source, method, output, calibration, samples = sys.argv[1:6]
request = QuantizeRequest(Path(source), method, output=Path(output),
                          calibration=Path(calibration) if calibration else None,
                          calibration_samples=int(samples))
cost = estimate(request)
process_rss = psutil.Process().memory_info().rss
started = time.monotonic()
stages = {}
def seen(progress):
    stages.setdefault(progress.stage, time.monotonic() - started)
report = quantize_model(request, on_progress=seen)
print(json.dumps({"estimated_peak": cost.peak_ram_bytes, "estimated_seconds": cost.seconds,
                  "seconds": time.monotonic() - started, "reported_peak": report.peak_rss_bytes,
                  "process_rss": process_rss, "stages": stages}))
"""


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants now."""
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.Error:
        # A child that exits while the tree is listed; the next sample sees the tree as it is then.
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_measured(
    source: Path, method: str, output: Path, calibration: Path | None, samples: int
) -> dict[str, Any]:
    """Runs one estimate + quantization in a child; returns its figures with the sampled tree peak."""
    shutil.rmtree(output, ignore_errors=True)
    command = [
        sys.executable,
        "-c",
        CHILD,
        str(source),
        method,
        str(output),
        str(calibration or ""),
        str(samples),
    ]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(SAMPLE_SECONDS):
            peak = max(peak, tree_rss(watched))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    done.set()
    sampler.join()
    shutil.rmtree(output, ignore_errors=True)
    if child.returncode != 0:
        raise RuntimeError(f"{method} on {source.name} failed ({child.returncode}):\n{stderr[-2000:]}")
    figures = dict(json.loads(stdout.strip().splitlines()[-1]))
    figures["tree_peak"] = peak
    return figures


def stage_split(figures: dict[str, Any]) -> str:
    """A calibrated run's seconds to its first calibration step, calibrating, and saving; blank for data-free runs."""
    stages = figures.get("stages") or {}
    if "calibrating" not in stages or "saving" not in stages:
        return ""
    start, calibrate = stages["calibrating"], stages["saving"] - stages["calibrating"]
    return f"{start:>7.1f} {calibrate:>7.1f} {figures['seconds'] - stages['saving']:>6.1f}"


def build_larger(workdir: Path, size_gb: float, demo: Path) -> Path:
    """The larger random Llama, with the demo model's tokenizer (its ids fit the larger vocabulary)."""
    folder = workdir / "estimate-llama"
    build_checkpoint(folder, size_gb, single_shard=False, shape=LLAMA_1B)
    for name in TOKENIZER_FILES:
        if (demo / name).is_file():
            shutil.copyfile(demo / name, folder / name)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=f"{DATA_FREE},{CALIBRATED}", help="comma-separated methods")
    parser.add_argument("--size-gb", type=float, default=0.45, help="the larger model's size (default 0.45)")
    parser.add_argument(
        "--samples", type=int, default=8, help="calibration samples per calibrated run (default 8)"
    )
    parser.add_argument("--models", default="demo,larger", help="demo, larger or both (default both)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "quant-tui-bench")
    args = parser.parse_args()

    from engine.model.demo import demo_corpus_path
    from engine.model.reference import resolve_model

    demo = resolve_model("demo")
    calibration = demo_corpus_path("calibration")
    models: list[tuple[str, Path]] = []
    if "demo" in args.models.split(","):
        models.append(("demo", demo))
    if "larger" in args.models.split(","):
        started = time.monotonic()
        larger = build_larger(args.workdir, args.size_gb, demo)
        size = sum(path.stat().st_size for path in larger.glob("*.safetensors"))
        print(
            f"larger model: {size / 1e9:.2f} GB bf16 in {larger} (ready in {time.monotonic() - started:.0f} s)"
        )
        models.append((f"llama-{size / 1e9:.2f}GB", larger))
    print(f"calibrated runs: {args.samples} samples of {calibration.name}; CPUs: {psutil.cpu_count()}\n")
    header = (
        f"{'model':<15} {'method':<17} {'estimate':>9} {'tree peak':>9} {'est/peak':>8} {'reported':>9} {'parent':>8} "
        f"{'est s':>6} {'real s':>6} {'est/time':>8} {'start s':>7} {'calib s':>7} {'save s':>6}"
    )
    print(header)
    outside = []
    for label, source in models:
        for method in args.methods.split(","):
            output = args.workdir / f"estimate-out-{method}"
            try:
                figures = run_measured(source, method, output, calibration, args.samples)
            except RuntimeError as error:
                print(f"{label:<15} {method:<17} failed: {str(error).strip().splitlines()[-1][:120]}")
                continue
            ratio = figures["estimated_peak"] / figures["tree_peak"]
            if not LOW <= ratio <= HIGH:
                outside.append(f"{label} {method}")
            print(
                f"{label:<15} {method:<17} {figures['estimated_peak'] / 1e6:>7.0f}MB "
                f"{figures['tree_peak'] / 1e6:>7.0f}MB {ratio:>8.2f} {figures['reported_peak'] / 1e6:>7.0f}MB {figures['process_rss'] / 1e6:>6.0f}MB "
                f"{figures['estimated_seconds']:>6.1f} {figures['seconds']:>6.1f} "
                f"{figures['estimated_seconds'] / figures['seconds']:>8.2f} {stage_split(figures)}",
                flush=True,
            )
    print(f"\npeak RAM estimates outside {LOW}-{HIGH}: {', '.join(outside) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
