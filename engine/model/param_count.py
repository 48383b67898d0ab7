"""Parameters from config.json alone, module by module, as vLLM builds the model (MoE, MLA, GDN, vision, MTP)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from engine.model import mtp_layers
from engine.model.architecture import Architecture
from engine.model.attention_params import attention_shapes, linear_attention_shapes
from engine.model.config_class_defaults import GEMMA3N_TEXT_MODEL_TYPES, GEMMA4_TEXT_MODEL_TYPES
from engine.model.config_json import first_key
from engine.model.ernie_vl import ERNIE_VL_MODEL_TYPE, ernie_vl_vision_experts
from engine.model.gemma3n_text import altup_laurel_layer_shapes, altup_projection_shapes
from engine.model.layer_variants import AttentionVariant, attention_variant, mlp_width, per_layer_input_size
from engine.model.lfm2_layers import LFM2_MODEL_TYPES, lfm2_mlp_width
from engine.model.linear_shape import DECODER_LINEAR_PARTS, LinearShape
from engine.model.vision_params import vision_tower_shapes

# vLLM's NemotronHMLP: up_proj and down_proj (relu2), no gate; its experts too (``is_non_gated_moe``).
_NON_GATED_MLP = {"nemotron_h"}
# Nemotron-H's decoder layers hold one mixer (Mamba2, attention, MLP or MoE) after one RMSNorm.
_ONE_NORM_PER_LAYER = {"nemotron_h"}
# Routers with an e_score_correction_bias whatever the config says (vLLM's Glm4MoE, NemotronHMoE, Ernie4_5_MoeMoE).
_SCORE_BIAS_ALWAYS = {"glm4_moe", "nemotron_h", "ernie4_5_moe"}
# Gemma 4's MoE layers keep their dense MLP beside the experts (Gemma4DecoderLayer's enable_moe_block).
_MLP_BESIDE_MOE = GEMMA4_TEXT_MODEL_TYPES
Mixer = Literal["attention", "linear", "both", None]  # both: Falcon-H1's attention + Mamba2 in one layer
Ffn = Literal["moe", "dense", None]


@dataclass(frozen=True, slots=True)
class ParamCounts:
    """Parameter counts by role, from safetensors headers or an architectural estimate.

    Attributes:
        total: parameters vLLM loads for plain serving (MTP layers excluded, vision towers included).
        linear: decoder Linear weights a quantizer would target.
        linear_out_features: their output rows (one scale per row).
        vision: parameters of vision/audio towers and projectors (part of ``other``).
        mtp: multi-token-prediction parameters in the checkpoint, not loaded (not in ``total``).
    """

    total: int
    linear: int
    linear_out_features: int
    embedding: int
    lm_head: int
    other: int
    vision: int = 0
    mtp: int = 0


@dataclass(frozen=True, slots=True)
class ModelShapes:
    """Every weight matrix of the model plus the vector parameters (norms, biases, sinks)."""

    linears: tuple[LinearShape, ...]
    vector_params: int
    embedding: int
    vision_vector_params: int
    mtp: int

    @property
    def lm_head(self) -> int:
        """The output projection's weights (0 when tied to the embedding)."""
        return sum(shape.numel for shape in self.linears if shape.part == "lm_head")

    def counts(self) -> ParamCounts:
        """The parameter counts by role."""
        decoder = [shape for shape in self.linears if shape.part in DECODER_LINEAR_PARTS]
        linear = sum(shape.numel for shape in decoder)
        vision = self.vision_vector_params + sum(s.numel for s in self.linears if s.part == "vision")
        router = sum(shape.numel for shape in self.linears if shape.part in ("router", "unquantized"))
        other = self.vector_params + router + vision
        return ParamCounts(
            total=linear + self.embedding + self.lm_head + other,
            linear=linear,
            linear_out_features=sum(shape.out_features * shape.count for shape in decoder),
            embedding=self.embedding,
            lm_head=self.lm_head,
            other=other,
            vision=vision,
            mtp=self.mtp,
        )


def _dense_width(arch: Architecture) -> int:
    """The dense MLP's width where all layers share one."""
    text = arch.text
    if arch.model_type == "granitemoehybrid" and text.get("shared_intermediate_size"):
        return int(text["shared_intermediate_size"])  # a dense Granite-4.0's MLP is its shared_mlp
    if arch.model_type in LFM2_MODEL_TYPES:
        return lfm2_mlp_width(text)
    return int(first_key(text, "intermediate_size_mlp", default=arch.intermediate_size))


def _mlp(
    arch: Architecture, moe_layers: int, dense_layers: int, width: int | None = None
) -> tuple[list[LinearShape], int]:
    """The MLP/MoE projections and the vector parameters over all those layers (dense ones ``width`` wide)."""
    h, text = arch.hidden_size, arch.text
    shapes: list[LinearShape] = []
    vectors = 0
    dense_width = width or _dense_width(arch)
    if arch.moe is None:
        dense_layers += moe_layers
        moe_layers = 0
    gated = arch.model_type not in _NON_GATED_MLP
    if dense_layers and not gated:
        shapes.append(LinearShape("mlp.up_proj", "mlp", h, dense_width, dense_layers))
        shapes.append(LinearShape("mlp.down_proj", "mlp", dense_width, h, dense_layers))
    elif dense_layers:
        fused = arch.model_type == "phi3"
        if fused:
            shapes.append(LinearShape("mlp.gate_up_proj", "mlp", h, 2 * dense_width, dense_layers))
        else:
            shapes.append(LinearShape("mlp.gate_proj", "mlp", h, dense_width, dense_layers))
            shapes.append(LinearShape("mlp.up_proj", "mlp", h, dense_width, dense_layers))
        shapes.append(LinearShape("mlp.down_proj", "mlp", dense_width, h, dense_layers))
    moe = arch.moe
    if moe is not None and moe_layers:
        experts, width = moe.num_experts, moe.expert_intermediate_size
        shapes += [
            LinearShape("mlp.experts.gate_up_proj", "experts", h, (1 + gated) * width, moe_layers * experts),
            LinearShape("mlp.experts.down_proj", "experts", width, h, moe_layers * experts),
            LinearShape("mlp.gate", "router", h, experts, moe_layers),
        ]
        if moe.shared_intermediate_size:
            shared = moe.shared_intermediate_size
            shapes += [
                LinearShape(
                    "mlp.shared_experts.gate_up_proj", "shared_expert", h, (1 + gated) * shared, moe_layers
                ),
                LinearShape("mlp.shared_experts.down_proj", "shared_expert", shared, h, moe_layers),
            ]
        if "shared_expert_intermediate_size" in text and moe.shared_intermediate_size:
            vectors += moe_layers * h  # Qwen2-MoE's shared_expert_gate (one output)
        lfm2_bias = arch.model_type == "lfm2_moe" and text.get("use_expert_bias")  # Lfm2MoeSparseMoeBlock
        if text.get("topk_method") == "noaux_tc" or arch.model_type in _SCORE_BIAS_ALWAYS or lfm2_bias:
            vectors += moe_layers * experts  # DeepSeek-V3's e_score_correction_bias
        if arch.model_type in _MLP_BESIDE_MOE:
            vectors += moe_layers * (h + experts)  # Gemma4Router's scale and per_expert_scale
        if arch.model_type == "gpt_oss":
            vectors += moe_layers * (experts + experts * (2 * width + h))  # router and expert biases
        if arch.config.get("model_type") == ERNIE_VL_MODEL_TYPE:  # its vision experts beside the text ones
            vision_experts, vision_vectors = ernie_vl_vision_experts(text, h, moe_layers)
            shapes += vision_experts
            vectors += vision_vectors
    return shapes, vectors


def _norms_per_layer(arch: Architecture) -> int:
    if arch.model_type in _ONE_NORM_PER_LAYER:
        return arch.hidden_size
    if arch.model_type in GEMMA4_TEXT_MODEL_TYPES | GEMMA3N_TEXT_MODEL_TYPES:
        # Four norms, post_per_layer_input_norm with per-layer inputs, and with MoE (Gemma 4)
        # post_feedforward_layernorm_1/_2 and pre_feedforward_layernorm_2.
        extra = (1 if per_layer_input_size(arch.text, arch.model_type) else 0) + (3 if arch.moe else 0)
        return (4 + extra) * arch.hidden_size
    # Gemma 2/3; GLM-4-0414's Glm4DecoderLayer adds post_self_attn_layernorm and post_mlp_layernorm (glm4.py).
    return (4 if arch.model_type in {"gemma2", "gemma3", "gemma3_text", "glm4"} else 2) * arch.hidden_size


def _per_layer_inputs(arch: Architecture, layers: int) -> list[LinearShape]:
    """Gemma 4's and 3n's per-layer-input gate and projection in ``layers`` layers (vLLM's Gemma4DecoderLayer,
    Gemma3nDecoderLayer)."""
    size, h = per_layer_input_size(arch.text, arch.model_type), arch.hidden_size
    if not size:
        return []
    return [
        LinearShape("per_layer_input_gate", "mlp", h, size, layers),
        LinearShape("per_layer_projection", "mlp", size, h, layers),
    ]


def _mixer_of(arch: Architecture, index: int) -> Mixer:
    """Layer ``index``'s sequence mixer: attention, a linear (GDN / Mamba) one, or none (kind "none")."""
    kinds = arch.attention.layer_kinds
    kind = kinds[index] if index < len(kinds) else "full"
    if kind != "none" and arch.attention.state is not None and arch.attention.state.parallel:
        return "both"
    return None if kind == "none" else "linear" if kind == "linear" else "attention"


def _ffn_of(arch: Architecture, index: int) -> Ffn:
    """Layer ``index``'s feed-forward part: MoE, a dense MLP, or none (Nemotron-H's mixer layers)."""
    if arch.moe is not None and index in arch.moe.moe_layers:
        return "moe"
    if arch.model_type in _ONE_NORM_PER_LAYER:  # Nemotron-H: only "-" layers (kind "none", not MoE) are MLPs
        return "dense" if _mixer_of(arch, index) is None else None
    return "dense"


def _has_mlp(arch: Architecture, ffn: Ffn) -> bool:
    """Whether a layer with this feed-forward part holds a dense MLP."""
    return ffn == "dense" or (ffn == "moe" and arch.model_type in _MLP_BESIDE_MOE)


def model_shapes(arch: Architecture) -> ModelShapes:
    """Every matrix vLLM allocates for the model, from its config (MTP layers counted apart)."""
    layers, h = arch.num_layers, arch.hidden_size
    mixers = [_mixer_of(arch, index) for index in range(layers)]
    ffns = [_ffn_of(arch, index) for index in range(layers)]
    both = mixers.count("both")
    linear_layers = mixers.count("linear") + both
    attention: list[LinearShape] = []
    attention_vectors = 0  # over all attention layers, one call per attention shape
    variants = [attention_variant(arch, i) for i in range(layers) if mixers[i] in ("attention", "both")]
    for variant, count in Counter(variants).items():
        shapes, vectors = attention_shapes(arch, count, variant)
        attention, attention_vectors = attention + shapes, attention_vectors + count * vectors
    gdn, gdn_vectors = linear_attention_shapes(arch, linear_layers)
    widths = Counter(mlp_width(arch, i, _dense_width(arch)) for i in range(layers) if _has_mlp(arch, ffns[i]))
    mlp: list[LinearShape] = []
    for width, count in widths.items():
        mlp += _mlp(arch, 0, count, width)[0]  # dense MLPs have no vector parameters
    moe, mlp_vectors = _mlp(arch, ffns.count("moe"), 0)
    altup_laurel, altup_laurel_vectors = altup_laurel_layer_shapes(arch, layers)
    linears = attention + gdn + mlp + moe + _per_layer_inputs(arch, layers) + altup_laurel
    linears += altup_projection_shapes(arch)
    embedding = arch.vocab_size * h
    if size := per_layer_input_size(arch.text, arch.model_type):  # Gemma 4's and 3n's per-layer embeddings
        vocab = int(arch.text.get("vocab_size_per_layer_input") or arch.vocab_size)
        embedding += vocab * layers * size
        linears.append(LinearShape("per_layer_model_projection", "mlp", h, layers * size, 1))
        attention_vectors += size  # per_layer_projection_norm
    if not arch.tie_word_embeddings:
        linears.append(LinearShape("lm_head", "lm_head", h, arch.vocab_size, 1))
    vision, vision_vectors = vision_tower_shapes(arch.config, h)
    vectors = attention_vectors + linear_layers * gdn_vectors + altup_laurel_vectors
    vectors += layers * _norms_per_layer(arch) + mlp_vectors + h  # final norm
    return ModelShapes(tuple(linears + vision), vectors, embedding, vision_vectors, _mtp_params(arch))


def _params_of(part: tuple[list[LinearShape], int]) -> int:
    """The weights of ``(shapes, vectors)`` as ``attention_shapes`` / ``_mlp`` return them for one layer."""
    shapes, vectors = part
    return sum(shape.numel for shape in shapes) + vectors


def _mtp_params(arch: Architecture) -> int:
    """The MTP layers' parameters in the checkpoint, built as vLLM's MTP module of the family builds them.

    Every style fuses the token's embedding with the last hidden state: two RMSNorms and one
    2h → h projection (DeepSeek's enorm / hnorm / eh_proj, Qwen's pre_fc_norm_* / fc). Styles:
    ``mtp_layers.MtpStyle``.
    """
    steps, h = arch.attention.mtp_layers, arch.hidden_size
    if not steps:
        return 0
    fusion = 2 * h * h + 2 * h
    style = mtp_layers.mtp_style(arch.model_type)
    ffn = _mlp(arch, 1, 0)  # the MoE block where the model has one, else its dense MLP
    if style == "qwen":  # one fusion and final norm, then ``steps`` gated full-attention layers
        layer = _params_of(attention_shapes(arch, 1)) + _params_of(ffn) + _norms_per_layer(arch)
        return fusion + h + steps * layer
    if style == "nemotron_h":  # one norm per block layer, final_layernorm after the last
        blocks = {"attention": attention_shapes(arch, 1), "moe": ffn, "mlp": _mlp(arch, 0, 1)}
        layers = mtp_layers.nemotron_h_mtp_blocks(arch.text)
        step = sum(_params_of(blocks[block]) + _norms_per_layer(arch) for block in layers)
        return steps * (fusion + h + step)
    if style == "ernie":  # a dense decoder layer a step, embedding and head shared
        layer = _params_of(attention_shapes(arch, 1)) + _params_of(_mlp(arch, 0, 1)) + _norms_per_layer(arch)
        return steps * (fusion + layer)
    # DeepSeek: one MoE decoder layer, shared_head (norm + head) and its own embed_tokens copy.
    layer = _params_of(attention_shapes(arch, 1)) + _params_of(ffn) + _norms_per_layer(arch)
    return steps * (fusion + h + layer + 2 * arch.vocab_size * h)


def decoder_layer_shapes(arch: Architecture) -> tuple[ModelShapes, ...]:
    """Each decoder layer's own matrices and vector parameters, in layer order.

    Layers differ where the MLP does: DeepSeek's ``first_k_dense_replace`` dense layers before the
    MoE ones, Llama-4's ``interleave_moe_layer_step``, Qwen-MoE's ``mlp_only_layers`` (the MoE
    layout's ``moe_layers``), and where the mixer does: Gated DeltaNet and Mamba layers (``linear``)
    beside full-attention ones; a Nemotron-H layer holds one mixer only (Mamba2, attention, MLP or MoE). Their sum plus the vocabulary matrices, final norm and vision tower is
    ``model_shapes``; MTP layers are not among them.
    """
    linear = linear_attention_shapes(arch, 1)
    altup_laurel, altup_laurel_vectors = altup_laurel_layer_shapes(arch, 1)
    extra = _per_layer_inputs(arch, 1) + altup_laurel
    by_kind: dict[tuple[Mixer, Ffn, AttentionVariant, int], ModelShapes] = {}
    keys = []
    for index in range(arch.num_layers):
        variant, width = attention_variant(arch, index), mlp_width(arch, index, _dense_width(arch))
        kind = (_mixer_of(arch, index), _ffn_of(arch, index), variant, width)
        keys.append(kind)
        if kind in by_kind:
            continue
        attention = attention_shapes(arch, 1, variant)
        mixers = {None: ([], 0), "attention": attention, "linear": linear}
        mixers["both"] = (attention[0] + linear[0], attention[1] + linear[1])
        dense, moe = _mlp(arch, 0, 1, width), _mlp(arch, 1, 0)
        beside = dense[0] if _has_mlp(arch, "moe") else []
        ffns = {None: ([], 0), "moe": (beside + moe[0], moe[1]), "dense": dense}
        (mixer, mixer_vectors), (mlp, mlp_vectors) = mixers[kind[0]], ffns[kind[1]]
        vectors = mixer_vectors + _norms_per_layer(arch) + mlp_vectors + altup_laurel_vectors
        by_kind[kind] = ModelShapes(tuple(mixer + mlp + extra), vectors, 0, 0, 0)
    return tuple(by_kind[key] for key in keys)


def estimate_params(arch: Architecture) -> ParamCounts:
    """Counts parameters from the architecture alone, as vLLM loads the model for plain serving."""
    return model_shapes(arch).counts()


def active_params(arch: Architecture) -> int:
    """Parameters one token uses: everything but the routed experts it is not sent to."""
    counts = estimate_params(arch)
    if arch.moe is None:
        return counts.total - counts.vision
    moe = arch.moe
    matrices = 2 if arch.model_type in _NON_GATED_MLP else 3
    routed = matrices * arch.hidden_size * moe.expert_intermediate_size * len(moe.moe_layers)
    unused = 0
    if arch.config.get("model_type") == ERNIE_VL_MODEL_TYPE:  # its vision experts serve image tokens only
        vision_experts, _ = ernie_vl_vision_experts(arch.text, arch.hidden_size, len(moe.moe_layers))
        unused = sum(shape.numel for shape in vision_experts if shape.part == "experts")
    return counts.total - counts.vision - routed * (moe.num_experts - moe.experts_per_token) - unused


def ceil_div(value: int, divisor: int) -> int:
    """Integer ceiling division, exact for any size (a float quotient rounds past 2**53)."""
    return -(-value // divisor)
