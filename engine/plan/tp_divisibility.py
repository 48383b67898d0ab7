"""Tensor-parallel sizes vLLM 0.32 refuses for a ModelOpt or block-FP8 checkpoint: each rank's share in whole blocks."""

from __future__ import annotations

from dataclasses import dataclass

from engine.model.architecture import read_architecture
from engine.model.config_json import load_config, text_config
from engine.model.inspect_model import ModelInfo
from engine.model.modelopt_config import (
    ModelOptConfig,
    decoder_module,
    is_excluded,
    read_hf_quant_config,
    read_modelopt,
)
from engine.model.param_count import model_shapes
from engine.plan.fp8_block_split import Fp8BlockCheck, Fp8BlockExperts, fp8_block_checks

# modelopt.py::MXFP8_BLOCK_SIZE (mxfp8_utils): one E8M0 weight scale per 32 inputs.
MXFP8_BLOCK = 32
# Each ModelOpt algo's scale block along a Linear's input, as its create_weights checks each rank's share
# (input_size_per_partition): KMxfp8Static "MXFP8 requires input size divisible by 32", KNvfp4Static (NVFP4 and
# W4A16_NVFP4) "in features size is not multiple of 16", KFp8Block128 (FP8_PB_WO) "requires in divisible by 128".
# FP8 and FP8_PER_CHANNEL_PER_TOKEN scale per tensor or per row: nothing to split.
LINEAR_INPUT_BLOCK = {"MXFP8": MXFP8_BLOCK, "NVFP4": 16, "W4A16_NVFP4": 16, "FP8_PB_WO": 128}
# Fused-MoE methods that check their widths: ModelOptMxFp8FusedMoE.create_weights, hidden_size and
# intermediate_size_per_partition (FusedMoEConfig: intermediate_size // TP) by 32. ModelOptNvFp4FusedMoE checks none.
EXPERTS_BLOCK = {"MXFP8": MXFP8_BLOCK}
# modelopt.py::_BLOCK_FP8_MOE_ALGOS: MIXED_PRECISION experts vLLM builds with Fp8MoEMethod.
BLOCK_FP8_MOE_ALGOS = ("FP8_PB_WO", "FP8_BLOCK_SCALES")
# RowParallelLinear modules (llama.py, qwen3_moe.py, deepseek_v2.py, mamba_mixer2.py, qwen3_next.py): each rank
# holds input_size / TP columns. Column-parallel ones (q/k/v, gate/up, lm_head) keep the whole input.
_ROW_PARALLEL = ("o_proj", "down_proj", "out_proj")
# Parts a ModelOpt config quantizes: decoder Linears, FusedMoE experts and a ParallelLMHead it does not exclude.
# Routers and Jamba's Mamba are built without the quant config; vision towers are left out here.
_QUANTIZED_PARTS = frozenset({"attention", "linear_attention", "mlp", "experts", "shared_expert", "lm_head"})


@dataclass(frozen=True, slots=True)
class BlockedWidth:
    """One quantized module's input width that must be whole scale blocks on every rank.

    Attributes:
        module: the module inside a decoder layer (``self_attn.o_proj``, ``mlp.experts.down_proj``) or ``lm_head``.
        width: its input features before the TP split.
        row_parallel: each rank holds ``width / TP`` of them (else all of them, at any TP).
        block: the scale block its inputs come in (32 for MXFP8).
        algo: the ModelOpt algo that wants it.
    """

    module: str
    width: int
    row_parallel: bool
    block: int = MXFP8_BLOCK
    algo: str = "MXFP8"

    def per_rank(self, tensor_parallel_size: int) -> int | None:
        """The inputs one rank holds, or None when ``width`` does not split evenly (vLLM's divide() asserts)."""
        if not self.row_parallel:
            return self.width
        return self.width // tensor_parallel_size if self.width % tensor_parallel_size == 0 else None

    def refusal(self, tensor_parallel_size: int) -> str | None:
        """Why the layer's create_weights raises at this TP size (inputs per rank not whole blocks), or None."""
        per_rank = self.per_rank(tensor_parallel_size)
        if per_rank is not None and per_rank % self.block == 0:
            return None
        if not self.row_parallel:
            held = f"{self.width} inputs on every rank"
        elif per_rank is None:
            held = f"{self.width} inputs, which TP {tensor_parallel_size} does not split evenly"
        else:
            held = f"{self.width} inputs, {per_rank} per rank at TP {tensor_parallel_size}"
        return (
            f"vLLM 0.32 refuses {self.algo} layers whose inputs per rank are not a multiple of {self.block} "
            f"(its create_weights): {self.module} has {held}"
        )


# A layer vLLM checks at each TP size: ``refusal(tp)`` says why it does not build, None when it does.
TpCheck = BlockedWidth | Fp8BlockCheck


def modelopt_quant_config(model: ModelInfo) -> dict[str, object] | None:
    """The ModelOpt config vLLM reads: config.json's quantization_config, else hf_quant_config.json."""
    config = load_config(model.path)
    quant = text_config(config).get("quantization_config") or config.get("quantization_config")
    if isinstance(quant, dict):
        return quant
    return read_hf_quant_config(model.path / "hf_quant_config.json")


def _one_algo(config: ModelOptConfig) -> str:
    """The algo a one-algo config gives every layer (checkpoint_size reads any other FP4 one as NVFP4)."""
    return "NVFP4" if "FP4" in config.algo and config.algo != "W4A16_NVFP4" else config.algo


def module_algos(
    config: ModelOptConfig, listed: list[tuple[str, str]], module: str, experts: bool, num_layers: int
) -> set[str]:
    """The algos ``module``'s matrices carry: the one algo unless excluded everywhere, else its listed names'.

    Names are tried as vLLM's prefixes spell them, ``model.layers.{i}.<module>``; fused experts are one FusedMoE
    (``model.layers.{i}.mlp.experts``), and a MIXED_PRECISION expert name of any projection gives it its algo
    (ModelOptMixedPrecisionConfig._resolve_quant_algo's prefix lookup). ``listed``: its names not excluded, as
    (``decoder_module``, algo).
    """
    if config.algo != "MIXED_PRECISION":
        vllm_module = module.rsplit(".", 1)[0] if experts else module
        names = (
            ["lm_head"]
            if module == "lm_head"
            else [f"model.layers.{i}.{vllm_module}" for i in range(num_layers)]
        )
        return (
            set() if all(is_excluded(name, config.exclude_modules) for name in names) else {_one_algo(config)}
        )
    base, _, projection = module.rpartition(".")
    wanted = {f"{base}.gate_proj", f"{base}.up_proj"} if projection == "gate_up_proj" else {module}
    return {algo for name, algo in listed if (name.startswith(base + ".") if experts else name in wanted)}


def scale_block_widths(model: ModelInfo) -> tuple[TpCheck, ...]:
    """The layers whose scale blocks a TP split must keep whole: a ModelOpt or block-FP8 checkpoint's (else empty)."""
    return _modelopt_widths(model) + fp8_block_checks(model)


def _modelopt_widths(model: ModelInfo) -> tuple[TpCheck, ...]:
    """A ModelOpt checkpoint's input widths its scale blocks split.

    A module its config leaves unquantized in every layer (excluded, or unlisted in MIXED_PRECISION) gets
    UnquantizedLinearMethod: no scale block. MIXED_PRECISION's block-FP8 experts are Fp8MoEMethod's, with
    Fp8Config([g, g]) for their one group_size g (default 128): lenient block-FP8 experts.
    """
    if model.quantization is None or model.quantization.method != "modelopt":
        return ()
    quant = modelopt_quant_config(model)
    if quant is None:
        return ()
    config = read_modelopt(quant)
    listed = [
        (decoder_module(name), algo)
        for name, algo in config.quantized_layers
        if not is_excluded(name, config.exclude_modules)
    ]
    shapes = model_shapes(read_architecture(load_config(model.path), model.path))
    widths: dict[TpCheck, None] = {}
    for shape in shapes.linears:
        if shape.part not in _QUANTIZED_PARTS:
            continue
        experts = shape.part == "experts"
        blocks = EXPERTS_BLOCK if experts else LINEAR_INPUT_BLOCK
        row_parallel = shape.module.rsplit(".", 1)[-1] in _ROW_PARALLEL
        for algo in sorted(module_algos(config, listed, shape.module, experts, model.num_layers)):
            if experts and config.algo == "MIXED_PRECISION" and algo in BLOCK_FP8_MOE_ALGOS and row_parallel:
                group = _block_fp8_group_size(quant)
                module = shape.module.rsplit(".", 1)[0]
                widths[
                    Fp8BlockExperts(module, shape.in_features, shape.out_features, (group, group), True)
                ] = None
            elif algo in blocks:
                widths[BlockedWidth(shape.module, shape.in_features, row_parallel, blocks[algo], algo)] = None
    return tuple(widths)


def _block_fp8_group_size(quant: dict[str, object]) -> int:
    """ModelOptMixedPrecisionConfig's one group_size of its block-FP8 MoE layers (128 when none gives one)."""
    section = quant.get("quantization")
    layers = (section if isinstance(section, dict) else quant).get("quantized_layers")
    sizes = [
        int(info.get("group_size", 128))
        for info in (layers.values() if isinstance(layers, dict) else ())
        if isinstance(info, dict) and str(info.get("quant_algo", "")).upper() in BLOCK_FP8_MOE_ALGOS
    ]
    return sizes[0] if sizes else 128


def tp_refusal(checks: tuple[TpCheck, ...], tensor_parallel_size: int) -> str | None:
    """Why vLLM 0.32 fails to build a layer at this TP size, or None when every layer builds.

    ModelOpt layers' create_weights raise when input_size_per_partition (ModelOptMxFp8FusedMoE: the hidden size
    and intermediate_size_per_partition) is not whole scale blocks (``LINEAR_INPUT_BLOCK``, ``EXPERTS_BLOCK``);
    block-FP8 ones follow ``fp8_block_split``.
    """
    return next((why for check in checks if (why := check.refusal(tensor_parallel_size))), None)
