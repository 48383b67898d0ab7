"""Tensor-parallel sizes vLLM 0.32 refuses for a block-FP8 checkpoint: each rank's share in whole scale blocks."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from engine.model.architecture import read_architecture
from engine.model.checkpoint_size import weight_layout
from engine.model.config_json import load_config
from engine.model.inspect_model import ModelInfo
from engine.model.linear_shape import LinearShape
from engine.model.param_count import model_shapes

Placement = Literal["row", "column", "replicated"]
# Parts whose Linear names are vLLM's own (llama.py, qwen3_moe.py, deepseek_v2.py, phi3.py): the checks follow
# how each builds them. Linear-attention, vision and router modules are left out.
_CHECKED_PARTS = frozenset({"attention", "mlp", "shared_expert"})
_ROW_PARALLEL = ("o_proj", "down_proj", "out_proj")
# Column-parallel Linears of one matrix: DeepSeek's q_b_proj/kv_b_proj, MLA's q_proj when q_lora_rank is null.
_SINGLE_COLUMN = ("q_b_proj", "kv_b_proj", "q_proj")
# refine_fp8_moe_block_shape (fused_moe/oracle/fp8.py): a finer grid than this is not tried.
_SMALLEST_REFINED_BLOCK = 32
_CHECK = "validate_fp8_block_shape"


@dataclass(frozen=True, slots=True)
class OutputPart:
    """One matrix of a (possibly merged) Linear's outputs: ``heads`` set for K/V, which replicate past their count."""

    width: int
    heads: int | None = None

    def per_rank(self, tensor_parallel_size: int) -> int | None:
        """Its outputs on one rank (None when the width does not split evenly: vLLM's divide() asserts)."""
        if self.heads is not None and self.width % self.heads == 0:
            return max(1, self.heads // tensor_parallel_size) * (self.width // self.heads)
        return self.width // tensor_parallel_size if self.width % tensor_parallel_size == 0 else None


@dataclass(frozen=True, slots=True)
class Fp8BlockLinear:
    """A block-FP8 Linear as vLLM builds it, checked as fp8_utils.validate_fp8_block_shape does at each TP size.

    Attributes:
        module: its name as vLLM fuses it (``self_attn.qkv_proj``, ``mlp.gate_up_proj``, ``self_attn.o_proj``).
        input_width: input features before the TP split.
        outputs: the merged matrices' outputs before the split (one for a plain Linear).
        placement: row-parallel (inputs split), column-parallel (outputs split) or replicated.
        block: [block_n, block_k], the scale block over (outputs, inputs).
        lenient: Fp8Config's: a merged layer whose parts miss a whole block skips the check
            (linear.py::_maybe_allow_fp8_block_shape_mismatch; compressed-tensors has no weight_block_size).
    """

    module: str
    input_width: int
    outputs: tuple[OutputPart, ...]
    placement: Placement
    block: tuple[int, int]
    lenient: bool

    def refusal(self, tensor_parallel_size: int) -> str | None:
        """Why vLLM refuses this layer at this TP size, or None when it builds."""
        tp = tensor_parallel_size
        block_n, block_k = self.block
        label = f"vLLM 0.32 refuses block-FP8 ({block_n}×{block_k}) layers"
        if self.placement == "row" and tp > 1:
            per_rank = self.input_width // tp if self.input_width % tp == 0 else None
            if per_rank is None or per_rank % block_k:
                held = "which it does not split evenly" if per_rank is None else f"{per_rank} per rank"
                return (
                    f"{label} whose inputs per rank are not a multiple of {block_k} ({_CHECK}): {self.module} "
                    f"has {self.input_width} inputs, {held} at TP {tp}"
                )
        column_tp = tp if self.placement == "column" else 1
        sizes = [part.per_rank(column_tp) for part in self.outputs]
        if None in sizes:
            return f"{label}: {self.module}'s outputs do not split evenly at TP {tp}"
        shares = [size for size in sizes if size is not None]
        merged = len(shares) > 1
        if merged and self.lenient and any(share % block_n for share in shares):
            return None
        whole = sum(part.width for part in self.outputs)
        split = column_tp > 1 and whole // sum(shares) == column_tp
        checked = shares if split else shares[:-1] if merged else []
        short = next((share for share in checked if share % block_n), None)
        if short is None:
            return None
        where = (
            f"{short} per rank at TP {tp}" if split else f"{short} in a merged part (every part but the last)"
        )
        return f"{label} whose outputs are not a multiple of {block_n} ({_CHECK}): {self.module} has {where}"


@dataclass(frozen=True, slots=True)
class Fp8BlockExperts:
    """A block-FP8 FusedMoE, checked as validate_fp8_block_shape_moe, or refined first (Fp8Config's experts).

    Attributes:
        intermediate: the experts' intermediate size, split over the TP ranks (expert parallelism off).
        hidden: the model's hidden size, which a refined block must divide too.
        lenient: Fp8MoEMethod's: when a rank's share misses the block, refine_fp8_moe_block_shape tries
            gcd(block_n, block_k, share, hidden) ≥ 32; compressed-tensors' W8A8 FP8 MoE checks straight away.
    """

    module: str
    intermediate: int
    hidden: int
    block: tuple[int, int]
    lenient: bool

    def refusal(self, tensor_parallel_size: int) -> str | None:
        """Why vLLM refuses these experts at this TP size, or None when they build."""
        tp = tensor_parallel_size
        block_n, block_k = self.block
        share = self.intermediate // tp if self.intermediate % tp == 0 else None
        if share is not None and share % block_n == 0 and (tp == 1 or share % block_k == 0):
            return None
        if share is not None and self.lenient and math.gcd(block_n, block_k, share, self.hidden) >= 32:
            return None
        held = "not split evenly" if share is None else f"{share} per rank"
        return (
            f"vLLM 0.32 refuses block-FP8 ({block_n}×{block_k}) experts whose intermediate size per rank is not "
            f"whole blocks (validate_fp8_block_shape_moe): {self.module} has {self.intermediate}, {held} at TP {tp}; "
            "--enable-expert-parallel keeps each expert whole"
        )


Fp8BlockCheck = Fp8BlockLinear | Fp8BlockExperts


def fp8_block_checks(model: ModelInfo) -> tuple[Fp8BlockCheck, ...]:
    """The block-FP8 layers of a checkpoint that vLLM checks at each TP size (empty for any other checkpoint).

    Fp8Config checkpoints (``quant_method: fp8`` with ``weight_block_size``, DeepSeek-V3's) are lenient with
    merged layers and refine their experts' blocks; compressed-tensors ones (quant-tui's fp8-block) are strict.
    """
    existing = model.quantization
    if existing is None or existing.method not in ("fp8", "compressed-tensors"):
        return ()
    layout = weight_layout(load_config(model.path), model.path)
    if layout.block is None:
        return ()
    block, parts, lenient = layout.block, frozenset(layout.parts), existing.method == "fp8"
    shapes = [
        shape
        for shape in model_shapes(read_architecture(load_config(model.path), model.path)).linears
        if shape.part in parts
    ]
    checks: list[Fp8BlockCheck] = [
        Fp8BlockExperts(shape.module.rsplit(".", 1)[0], shape.in_features, shape.out_features, block, lenient)
        for shape in shapes
        if shape.part == "experts" and shape.module.endswith(".down_proj")
    ]
    checks += _linear_checks(model, [s for s in shapes if s.part in _CHECKED_PARTS], block, lenient)
    return tuple(dict.fromkeys(checks))


def _linear_checks(
    model: ModelInfo, shapes: list[LinearShape], block: tuple[int, int], lenient: bool
) -> list[Fp8BlockLinear]:
    """Each Linear as vLLM fuses it: q/k/v into qkv_proj, gate/up into gate_up_proj, q_a/kv_a into one."""
    by_base: dict[str, dict[str, list[LinearShape]]] = defaultdict(lambda: defaultdict(list))
    for shape in shapes:
        base, _, name = shape.module.rpartition(".")
        by_base[base][name].append(shape)
    checks: list[Fp8BlockLinear] = []

    def add(module: str, width: int, outputs: tuple[OutputPart, ...], placement: Placement) -> None:
        checks.append(Fp8BlockLinear(module, width, outputs, placement, block, lenient))

    kv_heads = model.num_kv_heads
    for base, names in by_base.items():
        separate_qkv = "k_proj" in names
        for q, k, v in zip(*(names.get(n, []) for n in ("q_proj", "k_proj", "v_proj")), strict=False):
            parts = (
                OutputPart(q.out_features),
                OutputPart(k.out_features, kv_heads),
                OutputPart(v.out_features, kv_heads),
            )
            add(f"{base}.qkv_proj", q.in_features, parts, "column")
        for qkv in names.get("qkv_proj", []):
            head = qkv.out_features // (model.num_attention_heads + 2 * kv_heads)
            q_width = model.num_attention_heads * head
            kv = OutputPart(kv_heads * head, kv_heads)
            add(qkv.module, qkv.in_features, (OutputPart(q_width), kv, kv), "column")
        for gate, up in zip(names.get("gate_proj", []), names.get("up_proj", []), strict=False):
            add(
                f"{base}.gate_up_proj",
                gate.in_features,
                (OutputPart(gate.out_features), OutputPart(up.out_features)),
                "column",
            )
        for fused in names.get("gate_up_proj", []):
            half = OutputPart(fused.out_features // 2)
            add(fused.module, fused.in_features, (half, half), "column")
        for q_a, kv_a in zip(names.get("q_a_proj", []), names.get("kv_a_proj_with_mqa", []), strict=False):
            latent = (OutputPart(q_a.out_features), OutputPart(kv_a.out_features))
            add(f"{base}.fused_qkv_a_proj", q_a.in_features, latent, "replicated")
        for name in _SINGLE_COLUMN[:2] if separate_qkv else _SINGLE_COLUMN:
            for shape in names.get(name, []):
                add(shape.module, shape.in_features, (OutputPart(shape.out_features),), "column")
        for name in _ROW_PARALLEL:
            for shape in names.get(name, []):
                add(shape.module, shape.in_features, (OutputPart(shape.out_features),), "row")
    return checks
