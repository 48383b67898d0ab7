"""Tensor-parallel sizes vLLM 0.32 refuses for a ModelOpt MXFP8 checkpoint: each rank's inputs in whole scale blocks."""

from __future__ import annotations

from dataclasses import dataclass

from engine.model.architecture import read_architecture
from engine.model.config_json import load_config, text_config
from engine.model.inspect_model import ModelInfo
from engine.model.modelopt_config import is_excluded, read_hf_quant_config, read_modelopt
from engine.model.param_count import model_shapes

# modelopt.py::MXFP8_BLOCK_SIZE (mxfp8_utils): one E8M0 weight scale per 32 inputs.
MXFP8_BLOCK = 32
# RowParallelLinear modules (llama.py, qwen3_moe.py, deepseek_v2.py, mamba_mixer2.py, qwen3_next.py): each rank
# holds input_size / TP columns. Column-parallel ones (q/k/v, gate/up, lm_head) keep the whole input.
_ROW_PARALLEL = ("o_proj", "down_proj", "out_proj")
# Parts ModelOptMxFp8Config quantizes: decoder Linears, FusedMoE experts and a ParallelLMHead it does not exclude.
# Routers and Jamba's Mamba are built without the quant config; ModelOptQuantConfigBase.get_quant_method keeps
# vision_tower / vision_model prefixes unquantized (others, like Qwen-VL's "visual", only when excluded).
_QUANTIZED_PARTS = frozenset({"attention", "linear_attention", "mlp", "experts", "shared_expert", "lm_head"})


@dataclass(frozen=True, slots=True)
class BlockedWidth:
    """One quantized module's input width that must be whole MXFP8 scale blocks on every rank.

    Attributes:
        module: the module inside a decoder layer (``self_attn.o_proj``, ``mlp.experts.down_proj``) or ``lm_head``.
        width: its input features before the TP split.
        row_parallel: each rank holds ``width / TP`` of them (else all of them, at any TP).
    """

    module: str
    width: int
    row_parallel: bool

    def per_rank(self, tensor_parallel_size: int) -> int | None:
        """The inputs one rank holds, or None when ``width`` does not split evenly (vLLM's divide() asserts)."""
        if not self.row_parallel:
            return self.width
        return self.width // tensor_parallel_size if self.width % tensor_parallel_size == 0 else None


def _quant_config(model: ModelInfo) -> dict[str, object] | None:
    """The ModelOpt config vLLM reads: config.json's quantization_config, else hf_quant_config.json."""
    config = load_config(model.path)
    quant = text_config(config).get("quantization_config") or config.get("quantization_config")
    if isinstance(quant, dict):
        return quant
    return read_hf_quant_config(model.path / "hf_quant_config.json")


def mxfp8_widths(model: ModelInfo) -> tuple[BlockedWidth, ...]:
    """The input widths of a ModelOpt MXFP8 checkpoint's quantized modules (empty for any other checkpoint).

    A module its exclude list leaves unquantized in every decoder layer is left out (vLLM gives it
    UnquantizedLinearMethod: no scale block). Names are tried as vLLM's prefixes spell them,
    ``model.layers.{i}.<module>``; the fused experts are one FusedMoE, ``model.layers.{i}.mlp.experts``.
    """
    if model.quantization is None or model.quantization.recommend_as != "modelopt-mxfp8":
        return ()
    quant = _quant_config(model)
    if quant is None:
        return ()
    excluded = read_modelopt(quant).exclude_modules
    config = load_config(model.path)
    shapes = model_shapes(read_architecture(config, model.path))
    widths: dict[tuple[str, int, bool], None] = {}
    for shape in shapes.linears:
        if shape.part not in _QUANTIZED_PARTS:
            continue
        module = shape.module
        vllm_module = module.rsplit(".", 1)[0] if shape.part == "experts" else module
        names = (
            ["lm_head"]
            if module == "lm_head"
            else [f"model.layers.{index}.{vllm_module}" for index in range(model.num_layers)]
        )
        if all(is_excluded(name, excluded) for name in names):
            continue
        row_parallel = module.rsplit(".", 1)[-1] in _ROW_PARALLEL
        widths[(module, shape.in_features, row_parallel)] = None
    return tuple(BlockedWidth(*key) for key in widths)


def mxfp8_tp_refusal(widths: tuple[BlockedWidth, ...], tensor_parallel_size: int) -> str | None:
    """Why vLLM 0.32 fails to build an MXFP8 layer at this TP size, or None when every layer builds.

    KMxfp8Static.create_weights raises "MXFP8 requires input size divisible by 32" for a Linear whose
    input_size_per_partition is not; ModelOptMxFp8FusedMoE.create_weights the same for hidden_size and
    intermediate_size_per_partition (FusedMoEConfig: intermediate_size // TP).
    """
    for width in widths:
        per_rank = width.per_rank(tensor_parallel_size)
        if per_rank is not None and per_rank % MXFP8_BLOCK == 0:
            continue
        if not width.row_parallel:
            held = f"{width.width} inputs on every rank"
        elif per_rank is None:
            held = f"{width.width} inputs, which TP {tensor_parallel_size} does not split evenly"
        else:
            held = f"{width.width} inputs, {per_rank} per rank at TP {tensor_parallel_size}"
        return (
            f"vLLM 0.32 refuses MXFP8 layers whose inputs per rank are not a multiple of {MXFP8_BLOCK} "
            f"(KMxfp8Static / ModelOptMxFp8FusedMoE.create_weights): {width.module} has {held}"
        )
    return None
