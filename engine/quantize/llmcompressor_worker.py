"""Runs llm-compressor's ``oneshot`` inside its own environment and reports progress as JSON lines on stdout.

quant-tui starts this file with the llm-compressor environment's python (``python llmcompressor_worker.py
--source ... --output ... --method ... --calibration ...``); it imports nothing from quant-tui, because
that environment does not have it. Each stdout line is one JSON object::

    {"stage": "calibrating", "step": 3, "total": 8, "message": "(2/5): Calibrating"}
    {"stage": "done", "peak_rss_bytes": 123456789}
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

_STDOUT = sys.stdout


def emit(stage: str, **fields: Any) -> None:
    """Writes one progress line (the protocol quant-tui reads)."""
    _STDOUT.write(json.dumps({"stage": stage, "time": time.time(), **fields}) + "\n")
    _STDOUT.flush()


def read_samples(path: Path, limit: int) -> list[str]:
    """Calibration samples: a JSONL file's ``text`` fields, or a text file's paragraphs (blank-line separated)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json"):
        samples = []
        for line in text.splitlines():
            if line.strip():
                record = json.loads(line)
                samples.append(str(record["text"] if isinstance(record, dict) else record))
    else:
        samples = [block.strip() for block in text.split("\n\n") if block.strip()]
        if len(samples) < 2:
            # One long paragraph: cut it into pieces of about 200 words.
            words = text.split()
            samples = [" ".join(words[i : i + 200]) for i in range(0, len(words), 200)]
    return samples[:limit]


# The output head stays 16-bit in every recipe, tied or not; the other kept layers come from quant-tui's
# plan (``--ignore-file``: lm_head, routers, shared-expert gates, what vLLM builds unquantized).
ALWAYS_IGNORED = ["lm_head"]
# llm-compressor's FP8 KV cache scheme (examples/quantization_kv_cache): one calibrated static scale
# per layer for keys and one for values, which vLLM reads with ``--kv-cache-dtype fp8``.
KV_CACHE_SCHEMES = {
    "fp8": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": False, "symmetric": True},
}


def recipe_for(method: str, kv_cache_scheme: str | None = None, ignore: list[str] | None = None) -> list[Any]:
    """The llm-compressor modifiers for a quant-tui calibrated method, with the KV cache scheme when asked.

    ``ignore``: the model's module names left in 16-bit (``lm_head`` when not given).
    """
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    kept = ignore if ignore is not None else list(ALWAYS_IGNORED)
    kv = {"kv_cache_scheme": KV_CACHE_SCHEMES[kv_cache_scheme]} if kv_cache_scheme else {}
    if method == "gptq-w4a16":
        return [GPTQModifier(targets="Linear", scheme="W4A16", ignore=kept, **kv)]
    if method == "gptq-w8a16":
        return [GPTQModifier(targets="Linear", scheme="W8A16", ignore=kept, **kv)]
    if method == "smoothquant-int8":
        # llm-compressor's INT8 W8A8 recipe (examples/quantization_w8a8_int8): SmoothQuant moves
        # activation outliers into the weights, then GPTQ quantizes them.
        from llmcompressor.modifiers.transform import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=0.8),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=kept, **kv),
        ]
    if method == "nvfp4":
        # llm-compressor's NVFP4 recipe (examples/quantization_w4a4_fp4): FP4 weights with FP8 group
        # scales and a global scale, and a per-tensor activation global scale measured on the samples.
        return [QuantizationModifier(targets="Linear", scheme="NVFP4", ignore=kept, **kv)]
    if method == "awq-w4a16":
        from llmcompressor.modifiers.transform import AWQModifier

        return [
            AWQModifier(duo_scaling="both"),
            QuantizationModifier(targets=["Linear"], scheme="W4A16_ASYM", ignore=kept, **kv),
        ]
    raise SystemExit(f"unknown calibrated method {method}")


def saved_module_name(model: Any, name: str, weight: Any) -> str:
    """The name a module of ``model`` is saved under: transformers' save-time renaming of its name in memory."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        (key,) = revert_weight_conversion(model, {f"{name}.weight": weight})
    except (ImportError, AttributeError, ValueError, TypeError, KeyError):
        return name
    return str(key).removesuffix(".weight")


def ignored_modules(model: Any, kept: list[str], renames: dict[str, str]) -> list[str]:
    """The names in memory of the Linear modules whose checkpoint names are in ``kept``, plus ``lm_head``.

    A module's checkpoint name is its saved name, or the source name ``renames`` gives it.
    """
    import torch

    wanted = set(kept) - set(ALWAYS_IGNORED)
    found: set[str] = set()
    names = list(ALWAYS_IGNORED)
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or name in ALWAYS_IGNORED:
            continue
        saved = saved_module_name(model, name, module.weight)
        if renames.get(saved, saved) in wanted:
            names.append(name)
            found.add(renames.get(saved, saved))
    for missing in sorted(wanted - found):
        print(f"{missing}: kept 16-bit by quant-tui, not a Linear of the loaded model", file=sys.stderr)
    return names


def original_module_names(model: Any, source: Path) -> dict[str, str]:
    """Maps each Linear the checkpoint will be saved under, where the source names it differently, to the source's name.

    llm-compressor's linearized MoE load makes one Linear per expert named ``gate_proj``/``up_proj``/
    ``down_proj`` whatever the checkpoint called them (Mixtral: ``w1``/``w3``/``w2``), and saves those
    names, which a loader expecting the checkpoint's own names does not find. Each Linear's saved name
    is what transformers' save-time renaming makes of its name in memory; one that is not in the source
    is matched to the one source weight under the same parent with the same shape and the same first
    row (before calibration the loaded weight is the checkpoint's, unchanged). Call it before
    ``oneshot``, which changes the weights.
    """
    import contextlib

    import torch
    from safetensors import safe_open

    with contextlib.ExitStack() as stack:
        readers = [
            stack.enter_context(safe_open(path, "pt")) for path in sorted(source.glob("*.safetensors"))
        ]
        located = {key: reader for reader in readers for key in reader.keys()}  # noqa: SIM118
        # Source weights by their module's parent, so each lookup reads only its siblings.
        siblings: dict[str, list[str]] = {}
        for key in located:
            if key.endswith(".weight"):
                module_name = key.removesuffix(".weight")
                siblings.setdefault(module_name.rpartition(".")[0], []).append(module_name)
        renames: dict[str, str] = {}
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or module.weight.device.type == "meta":
                continue
            weight = module.weight.detach()
            saved = saved_module_name(model, name, weight)
            if f"{saved}.weight" in located:
                continue
            first_row = weight[0:1].cpu()
            matches = []
            for candidate in siblings.get(saved.rpartition(".")[0], []):
                piece = located[f"{candidate}.weight"].get_slice(f"{candidate}.weight")
                if list(piece.get_shape()) == list(weight.shape) and torch.equal(
                    piece[0:1].to(first_row.dtype), first_row
                ):
                    matches.append(candidate)
            if len(matches) == 1:
                renames[saved] = matches[0]
            else:
                print(
                    f"{saved}: not in {source.name}, {len(matches)} source weights match it", file=sys.stderr
                )
    return renames


def restore_source_names(output: Path, renames: dict[str, str]) -> None:
    """Renames the saved tensors (and the config's ignore / target module names) back to the source's names."""
    if not renames:
        return
    import os

    from safetensors import safe_open
    from safetensors.torch import save_file

    def renamed(key: str) -> str:
        module, _, suffix = key.rpartition(".")
        return f"{renames[module]}.{suffix}" if module in renames else key

    for path in sorted(output.glob("*.safetensors")):
        with safe_open(path, "pt") as reader:
            keys = list(reader.keys())
            if all(renamed(key) == key for key in keys):
                continue
            metadata = reader.metadata()
            tensors = {renamed(key): reader.get_tensor(key) for key in keys}
        partial = path.with_name(f".{path.name}.renaming")
        save_file(tensors, str(partial), metadata=metadata)
        os.replace(partial, path)
        del tensors
    index_path = output / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        index["weight_map"] = {renamed(key): file for key, file in index["weight_map"].items()}
        index_path.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    config_path = output / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict):
        if isinstance(quantization.get("ignore"), list):
            quantization["ignore"] = [renames.get(entry, entry) for entry in quantization["ignore"]]
        for group in (quantization.get("config_groups") or {}).values():
            if isinstance(group, dict) and isinstance(group.get("targets"), list):
                group["targets"] = [renames.get(entry, entry) for entry in group["targets"]]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def list_kept_layers(output: Path, kept: list[str]) -> None:
    """Adds the plan's kept layers that llm-compressor left out (no ``nn.Linear`` in memory: conv1d) to the config's ignore.

    vLLM builds those without the quantization config anyway; listing them keeps the checkpoint's
    ``ignore`` the same as the data-free writer's for the same model.
    """
    config_path = output / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    quantization = config.get("quantization_config")
    if not isinstance(quantization, dict) or not isinstance(quantization.get("ignore"), list):
        return
    missing = [name for name in kept if name not in quantization["ignore"]]
    if missing:
        quantization["ignore"] = [*quantization["ignore"], *missing]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def report_batches() -> None:
    """Turns the sequential pipeline's per-layer tqdm bars into progress lines."""
    import llmcompressor.pipelines.sequential.pipeline as sequential
    from tqdm import tqdm

    class ReportingTqdm(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._label = str(kwargs.get("desc", ""))
            self._total = kwargs.get("total")

        def __iter__(self) -> Any:
            for index, item in enumerate(super().__iter__()):
                emit("calibrating", step=index + 1, total=self._total, message=self._label)
                yield item

    sequential.tqdm = ReportingTqdm


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--calibration", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--kv-cache-scheme", choices=sorted(KV_CACHE_SCHEMES))
    parser.add_argument("--ignore-file", type=Path, help="JSON list of checkpoint module names kept 16-bit")
    args = parser.parse_args()

    # Libraries print to stdout; keep it for the protocol and send everything else to stderr.
    sys.stdout = sys.stderr
    emit("loading", message=f"loading {args.source.name} into memory")
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    if not torch.cuda.is_available():
        # llm-compressor 0.14's AWQ pins cached activations for a host-to-device copy that never
        # happens without an accelerator, and torch refuses pin_memory there: pinning is moot on CPU.
        torch.Tensor.pin_memory = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    # MoE experts load as one Linear per expert (llm-compressor's linearized MoE), so every
    # expert is calibrated and quantized and the checkpoint keeps the per-expert layout vLLM reads.
    from llmcompressor.modeling.moe.linearize import load_quantizable_moe

    try:
        with load_quantizable_moe(AutoModelForCausalLM):
            model = AutoModelForCausalLM.from_pretrained(args.source, dtype="auto")
    except ModuleNotFoundError as error:
        # 0.14's direct linearized load of some families (Qwen3-MoE) imports every transformers
        # model, torchvision ones included; oneshot linearizes a normally loaded model instead.
        print(f"linearized MoE load unavailable ({error}); loading normally", file=sys.stderr)
        model = AutoModelForCausalLM.from_pretrained(args.source, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.source)
    renames = original_module_names(model, args.source)
    kept = json.loads(args.ignore_file.read_text(encoding="utf-8")) if args.ignore_file else []
    ignore = ignored_modules(model, [str(name) for name in kept], renames)
    samples = read_samples(args.calibration, args.samples)
    emit(
        "calibrating",
        step=0,
        total=None,
        message=f"{len(samples)} calibration samples from {args.calibration.name}",
    )
    report_batches()
    oneshot(
        model=model,
        tokenizer=tokenizer,
        dataset=Dataset.from_dict({"text": samples}),
        recipe=recipe_for(args.method, args.kv_cache_scheme, ignore),
        max_seq_length=args.max_seq_length,
        num_calibration_samples=len(samples),
        pipeline="sequential",
    )
    emit("saving", message=f"writing {args.output.name}")
    model.save_pretrained(args.output, save_compressed=True)
    tokenizer.save_pretrained(args.output)
    if renames:
        emit(
            "saving",
            message=f"naming {len(renames)} linearized expert layers as {args.source.name} names them",
        )
        restore_source_names(args.output, renames)
    list_kept_layers(args.output, [str(name) for name in kept])
    emit("done", peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
