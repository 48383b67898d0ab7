"""Benchmark of the streaming quantizer on a several-GB Llama-shaped checkpoint built locally.

Prints ratios measured in one run: time vs a plain copy of the same checkpoint on the same disk
(each repeat evicts the source from the page cache, then times a copy and every method back to back,
so both see the same disk and the same load on the machine; the median of the repeats is quoted),
peak RSS / model size, the ``--dry-run`` time estimate vs the real time, the ``--dry-run`` estimate of peak RSS vs the measured peak (on this model and
on the demo model), and (when quant-tui's llm-compressor environment exists) time and peak-RSS
ratios vs llm-compressor's ``model_free_ptq`` on the same model and scheme.

Run it under the heavy-job lock::

    flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/bench_quantize.py --size-gb 1.7 --single-shard
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILT_MARKER = ".bench-complete"


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions of a built Llama (grouped-query attention)."""

    hidden: int = 4096
    intermediate: int = 11008
    heads: int = 32
    kv_heads: int = 8
    vocab: int = 32000

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Llama-7B's layers; a TinyLlama-1.1B-like shape keeps calibrated runs on 2 cores short.
LLAMA_7B = LlamaShape()
LLAMA_1B = LlamaShape(hidden=2048, intermediate=5632, heads=32, kv_heads=4)


def layer_shapes(layer: int, shape: LlamaShape = LLAMA_7B) -> dict[str, tuple[int, ...]]:
    """The tensors of one decoder layer of ``shape``."""
    prefix = f"model.layers.{layer}"
    hidden, attention = shape.hidden, shape.heads * shape.head_dim
    return {
        f"{prefix}.input_layernorm.weight": (hidden,),
        f"{prefix}.self_attn.q_proj.weight": (attention, hidden),
        f"{prefix}.self_attn.k_proj.weight": (shape.kv_heads * shape.head_dim, hidden),
        f"{prefix}.self_attn.v_proj.weight": (shape.kv_heads * shape.head_dim, hidden),
        f"{prefix}.self_attn.o_proj.weight": (hidden, attention),
        f"{prefix}.post_attention_layernorm.weight": (hidden,),
        f"{prefix}.mlp.gate_proj.weight": (shape.intermediate, hidden),
        f"{prefix}.mlp.up_proj.weight": (shape.intermediate, hidden),
        f"{prefix}.mlp.down_proj.weight": (hidden, shape.intermediate),
    }


def numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def build_checkpoint(
    folder: Path, size_gb: float, single_shard: bool = False, shape: LlamaShape = LLAMA_7B
) -> tuple[int, int]:
    """Writes a random bf16 Llama of about ``size_gb`` GB, one shard at a time; returns (bytes, largest tensor bytes).

    With ``single_shard`` every tensor goes to one ``model.safetensors`` (written in one go).
    """
    import torch
    from safetensors.torch import save_file

    hidden, vocab = shape.hidden, shape.vocab
    per_layer = sum(numel(dims) for dims in layer_shapes(0, shape).values()) * 2
    embeddings = 2 * vocab * hidden * 2
    layers = max(1, round((size_gb * 1e9 - embeddings) / per_layer))
    marker = f"{size_gb} {'single' if single_shard else 'sharded'} {shape}"
    if (folder / BUILT_MARKER).is_file() and (folder / BUILT_MARKER).read_text() == marker:
        total = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
        return total, vocab * hidden * 2
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    shards: list[dict[str, tuple[int, ...]]] = [
        {"model.embed_tokens.weight": (vocab, hidden)},
        *(
            {**layer_shapes(2 * i, shape), **(layer_shapes(2 * i + 1, shape) if 2 * i + 1 < layers else {})}
            for i in range((layers + 1) // 2)
        ),
        {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)},
    ]
    if single_shard:
        shards = [{name: shape for shard in shards for name, shape in shard.items()}]
    weight_map = {}
    for index, shapes in enumerate(shards):
        name = (
            "model.safetensors" if single_shard else f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        )
        tensors = {
            key: (torch.ones(dims) if len(dims) == 1 else torch.randn(dims, generator=generator) * 0.02).to(
                torch.bfloat16
            )
            for key, dims in shapes.items()
        }
        save_file(tensors, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    total = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
    if not single_shard:
        (folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
        )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / BUILT_MARKER).write_text(marker)
    return total, vocab * hidden * 2


def evict(folder: Path) -> None:
    """Drops the folder's safetensors files from the page cache, so the next reader goes to the disk."""
    for path in folder.glob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def plain_copy(source: Path, target: Path) -> float:
    """Copies the checkpoint's shards (fsynced, like the quantizer's) from a cold cache; returns the seconds."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    evict(source)
    started = time.monotonic()
    for path in sorted(source.glob("*.safetensors")):
        shutil.copyfile(path, target / path.name)
        fd = os.open(target / path.name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return seconds


# VmHWM is the process's own peak RSS; ru_maxrss would carry the parent's peak over the fork.
PEAK_RSS = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

QUANTIZE_CHILD = (
    PEAK_RSS
    + """
import json, sys, time
from pathlib import Path
import torch, safetensors  # imported before measuring the baseline
baseline = peak_rss()
from engine.quantize.request import QuantizeRequest
from engine.quantize.runner import quantize_model
from engine.quantize.estimate import estimate
request = QuantizeRequest(Path(sys.argv[1]), sys.argv[2], output=Path(sys.argv[3]))
cost = estimate(request)
estimated, estimated_seconds = cost.peak_ram_bytes, cost.seconds
started = time.monotonic()
report = quantize_model(request)
print(json.dumps({
    "estimated_peak": estimated,
    "estimated_seconds": estimated_seconds,
    "seconds": time.monotonic() - started,
    "output_bytes": report.output_bytes,
    "peak_rss": peak_rss(),
    "sampled_peak_rss": report.peak_rss_bytes,
    "baseline_rss": baseline,
}))
"""
)

LLMCOMPRESSOR_CHILD = (
    PEAK_RSS
    + """
import json, sys, time
import torch, safetensors
baseline = peak_rss()
from llmcompressor import model_free_ptq
started = time.monotonic()
model_free_ptq(model_stub=sys.argv[1], save_directory=sys.argv[3], scheme=sys.argv[2], ignore=["lm_head"],
               max_workers=int(sys.argv[4]), device="cpu")
print(json.dumps({
    "seconds": time.monotonic() - started,
    "peak_rss": peak_rss(),
    "baseline_rss": baseline,
}))
"""
)


def run_child(python: str, code: str, *args: str) -> dict[str, float]:
    result = subprocess.run(
        [python, "-c", code, *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"child failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=4.0, help="checkpoint size to build (default 4)")
    parser.add_argument(
        "--methods",
        default="fp8,fp8-block,int8-w8a8,w8a16,w4a16,nvfp4a16",
        help="comma-separated data-free methods",
    )
    parser.add_argument(
        "--single-shard", action="store_true", help="write the checkpoint as one model.safetensors"
    )
    parser.add_argument(
        "--llmcompressor-methods", default="fp8", help="methods also run through model_free_ptq (default fp8)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="copy + every method, this many times (median)"
    )
    parser.add_argument("--demo", type=Path, help="also compare estimate vs peak on this (demo) model folder")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "quant-tui-bench")
    parser.add_argument("--keep", action="store_true", help="keep the built checkpoint for the next run")
    args = parser.parse_args()

    from engine.quantize.llmcompressor_env import llmcompressor_python

    source = args.workdir / "bench-llama"
    started = time.monotonic()
    model_bytes, largest = build_checkpoint(source, args.size_gb, args.single_shard)
    print(
        f"checkpoint: {model_bytes / 1e9:.2f} GB bf16 in {source} (built in {time.monotonic() - started:.0f} s)"
    )
    print(f"largest tensor: {largest / 1e6:.0f} MB; CPUs: {os.cpu_count()}")
    methods = args.methods.split(",")
    copies: list[float] = []
    runs: dict[str, list[dict[str, float]]] = {method: [] for method in methods}
    for repeat in range(args.repeats):
        copies.append(plain_copy(source, args.workdir / "plain-copy"))
        for method in methods:
            output = args.workdir / f"out-{method}"
            shutil.rmtree(output, ignore_errors=True)
            evict(source)
            runs[method].append(run_child(sys.executable, QUANTIZE_CHILD, str(source), method, str(output)))
            shutil.rmtree(output, ignore_errors=True)
        line = " ".join(f"{m} {runs[m][-1]['seconds'] / copies[-1]:.2f}" for m in methods)
        print(
            f"repeat {repeat + 1}: copy {copies[-1]:.1f} s; time/copy {line}; load {os.getloadavg()[0]:.1f}"
        )
    copy_seconds = statistics.median(copies)
    print(
        f"\nplain copy: median {copy_seconds:.1f} s, {model_bytes / copy_seconds / 1e6:.0f} MB/s (cold cache, fsynced)\n"
    )

    compressor = llmcompressor_python()
    header = (
        f"{'method':<10} {'seconds':>8} {'time/copy':>9} {'min-max':>11} {'in MB/s':>8} "
        f"{'peak RSS':>9} {'RSS/model':>9} {'est/peak':>8} {'est/time':>8}"
    )
    print(header)
    rows = []
    for method in methods:
        ratios = [run["seconds"] / copy for run, copy in zip(runs[method], copies, strict=True)]
        # The median run by time: its memory and estimate figures go with the median time.
        ours = sorted(runs[method], key=lambda run: run["seconds"])[len(runs[method]) // 2]
        seconds = ours["seconds"]
        print(
            f"{method:<10} {seconds:>8.1f} {statistics.median(ratios):>9.2f} "
            f"{min(ratios):>5.2f}-{max(ratios):<5.2f} {model_bytes / seconds / 1e6:>8.0f} "
            f"{ours['peak_rss'] / 1e9:>7.2f}GB {ours['peak_rss'] / model_bytes:>9.3f} "
            f"{ours['estimated_peak'] / ours['peak_rss']:>8.2f} {ours['estimated_seconds'] / seconds:>8.2f}"
        )
        rows.append((method, ours))
    if args.demo is not None:
        print(f"\n--dry-run estimate vs measured peak RSS on {args.demo.name}:")
        for method in methods:
            output = args.workdir / f"demo-{method}"
            shutil.rmtree(output, ignore_errors=True)
            ours = run_child(sys.executable, QUANTIZE_CHILD, str(args.demo), method, str(output))
            print(
                f"{method:<10} estimate {ours['estimated_peak'] / 1e6:.0f} MB, peak {ours['peak_rss'] / 1e6:.0f} MB, "
                f"ratio {ours['estimated_peak'] / ours['peak_rss']:.2f}"
            )
            shutil.rmtree(output, ignore_errors=True)
    if compressor is None:
        print("\nllm-compressor environment not found (run a calibrated method once to create it); skipped.")
    else:
        from engine.plan.methods import method as method_record

        print(f"\nvs llm-compressor model_free_ptq ({compressor}):")
        for method, ours in rows:
            if method not in args.llmcompressor_methods.split(","):
                continue
            output = args.workdir / f"llmc-{method}"
            shutil.rmtree(output, ignore_errors=True)
            try:
                theirs = run_child(
                    str(compressor),
                    LLMCOMPRESSOR_CHILD,
                    str(source),
                    str(method_record(method).ct_scheme),  # the registry's compressed-tensors preset
                    str(output),
                    str(os.cpu_count() or 1),
                )
            except RuntimeError as error:
                # model_free_ptq does not take every preset; the other methods are still compared.
                print(f"{method:<10} llm-compressor failed: {str(error).strip().splitlines()[-1][:200]}")
                shutil.rmtree(output, ignore_errors=True)
                continue
            print(
                f"{method:<10} llm-compressor {theirs['seconds']:.1f} s, peak RSS {theirs['peak_rss'] / 1e9:.2f} GB; "
                f"time ratio (ours/theirs) {ours['seconds'] / theirs['seconds']:.2f}, "
                f"peak RSS ratio {ours['peak_rss'] / theirs['peak_rss']:.2f}, "
                f"output {folder_bytes(output) / 1e9:.2f} GB"
            )
            shutil.rmtree(output, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(source, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
