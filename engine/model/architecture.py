"""A model's shape read from config.json alone: layers, attention layout (GQA, MLA, sliding, chunked, linear), MoE layout."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from engine.errors import ModelError
from engine.model import hybrid_layers, mtp_layers, shared_kv_layers
from engine.model.config_class_defaults import (
    ALTERNATING_SLIDING,
    CONFIG_CLASS_DEFAULTS,
    DRAFT_ONLY_MODEL_TYPES,
    GEMMA4_TEXT_MODEL_TYPES,
    MLA_MODEL_TYPES,
    QK_NORM_MODEL_TYPES,
    SLIDING_PATTERN_DEFAULTS,
    UNTIED_BY_DEFAULT,
    sparse_indexer_cache,
)
from engine.model.config_json import first_key, text_config
from engine.model.lfm2_layers import lfm2_config
from engine.model.minicpmv import minicpmv_language_model_type
from engine.model.moe_layout import MoeLayout, read_moe_layout
from engine.model.recurrent_state import RecurrentState, linear_attention_state, linear_layer_names
from engine.model.vision_params import has_towers

# "linear": a Gated DeltaNet or Mamba layer (a fixed-size state, no per-token KV); "none": no mixer, no cache.
LayerAttention = Literal["full", "sliding", "chunked", "linear", "none"]
# Families whose q/k/v carry a bias when config.json says nothing: Qwen2 and the Qwen2-VL / Qwen2.5-VL language
# models, which vLLM builds as Qwen2Model (flat configs, or a text_config of model_type "qwen2_5_vl_text").
_QKV_BIAS_MODEL_TYPES = frozenset(
    {"qwen2", "qwen2_moe", "qwen2_vl", "qwen2_vl_text", "qwen2_5_vl", "qwen2_5_vl_text"}
)
# Language models vLLM builds as another family's (glm4_1v.py: GLM-4.1V's text is Glm4ForCausalLM, GLM-4.5V's
# Glm4MoeForCausalLM; the Omni thinkers' Qwen2ForCausalLM and Qwen3MoeLLMForCausalLM): the family's rules apply.
BUILT_AS_MODEL_TYPE = {
    "glm4v_text": "glm4",
    "glm4v_moe_text": "glm4_moe",
    "qwen2_5_omni_text": "qwen2",
    "qwen3_omni_moe_text": "qwen3_moe",
    # ernie45_vl_moe.py: ERNIE-4.5-MoE's layers, with vision experts beside the text ones (ernie_vl.py).
    "ernie4_5_moe_vl": "ernie4_5_moe",
}


@dataclass(frozen=True, slots=True)
class AttentionLayout:
    """What each decoder layer caches per token, as vLLM's attention layers declare it.

    Attributes:
        layer_kinds: one entry per decoder layer, in order (MTP layers excluded); "none" owns no cache.
        num_kv_heads: KV heads over all ranks (1 for MLA: one latent vector per token).
        head_size: elements of one head's key (MLA: kv_lora_rank + qk_rope_head_dim).
        head_size_v: elements of one head's value (0 for MLA, whose latent serves both).
        mla: whether vLLM caches the compressed MLA latent (DeepSeek-V2/V3, Kimi-K2, ...).
        sliding_window: the window of the "sliding" layers, in tokens.
        attention_chunk_size: the chunk of the "chunked" (Llama-4 local) layers, in tokens.
        mtp_layers: multi-token-prediction layers (Nemotron-H: steps) in the checkpoint, not loaded to serve.
        qk_rope_head_dim: MLA's decoupled rope part of the latent (0 otherwise).
        state: the recurrent state of the "linear" layers (None without such layers).
        indexer_bytes_per_token: DeepSeek Sparse Attention's indexer key cache, bytes per token in
            each layer with an indexer (``DeepseekV32IndexerCache``: uint8, whatever the KV dtype).
        indexer_layers: the decoder layers that own an indexer (and its cache).
        full_num_kv_heads: KV heads of the "full" layers where they differ (Gemma 4's global layers; 0: same).
        full_head_size: head size of the "full" layers where it differs (Gemma 4's ``global_head_dim``; 0: same).
        kv_shared_layers: layers that read an earlier layer's KV cache and allocate none (Gemma 3n / 4).
        vision_bidirectional: image tokens attend both ways (Gemma 4's ``use_bidirectional_attention``
            "vision": vLLM's Gemma4ModelArchConfigConvertor.is_mm_prefix_lm).
    """

    layer_kinds: tuple[LayerAttention, ...]
    num_kv_heads: int
    head_size: int
    head_size_v: int
    mla: bool = False
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    mtp_layers: int = 0
    qk_rope_head_dim: int = 0
    state: RecurrentState | None = None
    indexer_bytes_per_token: int = 0
    indexer_layers: tuple[int, ...] = ()
    full_num_kv_heads: int = 0
    full_head_size: int = 0
    kv_shared_layers: tuple[int, ...] = ()
    vision_bidirectional: bool = False

    def kv_heads_per_rank(self, tensor_parallel_size: int = 1) -> int:
        """KV heads one tensor-parallel rank holds: MLA's latent is whole on every rank; others split, at least 1."""
        if self.mla:
            return 1
        return max(1, self.num_kv_heads // tensor_parallel_size)

    def bytes_per_token_per_layer(self, kv_dtype_bytes: float, tensor_parallel_size: int = 1) -> int:
        """KV bytes one token takes in one layer on one rank (vLLM's AttentionSpec page / block size)."""
        elements = self.kv_heads_per_rank(tensor_parallel_size) * (self.head_size + self.head_size_v)
        # round, not int: fp8_ds_mla's 656 bytes per 576-element latent come in as 656 / 576 per element.
        return round(elements * kv_dtype_bytes)

    def bytes_per_token_of(
        self, kind: LayerAttention, kv_dtype_bytes: float, tensor_parallel_size: int = 1
    ) -> int:
        """KV bytes one token takes in one layer of ``kind`` on one rank (Gemma 4's full layers: their own heads)."""
        if kind == "full" and self.full_head_size:
            heads = max(1, (self.full_num_kv_heads or self.num_kv_heads) // tensor_parallel_size)
            return round(heads * 2 * self.full_head_size * kv_dtype_bytes)
        return self.bytes_per_token_per_layer(kv_dtype_bytes, tensor_parallel_size)

    def caches_kv(self, index: int) -> bool:
        """Whether decoder layer ``index`` allocates a KV cache page (attention, not KV-shared)."""
        kind = self.layer_kinds[index]
        return kind not in ("linear", "none") and index not in self.kv_shared_layers

    def indexer_count(self, stage_layers: range | None = None) -> int:
        """Layers with an indexer cache (among ``stage_layers``' decoder layers when given)."""
        return sum(1 for layer in self.indexer_layers if stage_layers is None or layer in stage_layers)

    def count(self, kind: LayerAttention) -> int:
        """How many layers are of this kind."""
        return sum(1 for layer in self.layer_kinds if layer == kind)

    @property
    def description(self) -> str:
        """A short honest summary for the UI, e.g. "MLA latent 576 × 61 layers" or "GQA 8 KV heads × 128"."""
        if self.mla:
            rope = self.qk_rope_head_dim
            text = f"MLA latent {self.head_size} ({self.head_size - rope} + {rope} rope)"
            if self.indexer_layers:
                text += f" + indexer {self.indexer_bytes_per_token}"
                if len(self.indexer_layers) != len(self.layer_kinds):
                    text += f" in {len(self.indexer_layers)} layers"
        elif self.num_kv_heads == 1:
            text = f"MQA 1 KV head × {self.head_size}"
        else:
            text = f"GQA {self.num_kv_heads} KV heads × {self.head_size}"
        parts = []
        if self.count("sliding"):
            parts.append(f"{self.count('sliding')} sliding ({self.sliding_window})")
        if self.count("chunked"):
            parts.append(f"{self.count('chunked')} chunked ({self.attention_chunk_size})")
        if self.count("linear"):
            mixer = self.state.mixer.upper().replace("_", " ") if self.state else "?"
            parts.append(f"{self.count('linear')} linear ({mixer})")
        if self.count("none"):
            parts.append(f"{self.count('none')} without cache")
        if parts:
            if self.count("full"):
                parts.append(f"{self.count('full')} full")
            text += ", layers: " + " + ".join(parts)
        else:
            text += f" × {len(self.layer_kinds)} layers"
        if self.state is not None and self.state.parallel:  # Falcon-H1: attention and Mamba2 in each layer
            text += f", each with a {self.state.mixer.upper()} state"
        if self.full_head_size:
            text += f", full layers {self.full_num_kv_heads or self.num_kv_heads} KV heads × {self.full_head_size}"
        if self.kv_shared_layers:
            text += f", {len(self.kv_shared_layers)} reuse earlier layers' KV"
        if self.mtp_layers:
            text += f" (+{self.mtp_layers} MTP, not loaded)"
        return text


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The shape numbers every description of a model carries (an Architecture's, a ModelInfo's).

    Attributes:
        num_layers: decoder layers of the main model (MTP layers not included).
    """

    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_context: int
    tie_word_embeddings: bool
    torch_dtype: str

    def shape(self) -> dict[str, Any]:
        """These fields alone, by name: the keyword arguments of another description of the same model."""
        return {item.name: getattr(self, item.name) for item in fields(ModelShape)}


@dataclass(frozen=True, slots=True)
class Architecture(ModelShape):
    """The shape numbers read from a config, before counting parameters.

    Attributes:
        config: the whole config.json; ``text`` is the language model's part (``text_config``).
    """

    config: dict[str, Any]
    text: dict[str, Any]
    attention: AttentionLayout
    moe: MoeLayout | None
    attention_bias: bool
    qk_norm: bool
    is_multimodal: bool

    @property
    def num_experts(self) -> int | None:
        """Routed experts per MoE layer, None for a dense model."""
        return self.moe.num_experts if self.moe else None

    @property
    def experts_per_token(self) -> int | None:
        """Routed experts each token uses, None for a dense model."""
        return self.moe.experts_per_token if self.moe else None


def _layer_kinds(
    text: dict[str, Any], model_type: str, num_layers: int, state: RecurrentState | None = None
) -> tuple[LayerAttention, ...]:
    """Each layer's attention kind, as transformers' config classes fill ``layer_types`` and vLLM reads it."""
    window = text.get("sliding_window") or None
    if text.get("use_sliding_window") is False:
        window = None  # Qwen2/Qwen3 configs carry a window they do not use
    chunk = text.get("attention_chunk_size") or None
    names = linear_layer_names(text, num_layers) if state is not None else text.get("layer_types")
    if not names:
        if chunk is not None:  # Llama-4: RoPE layers attend in local chunks, NoPE layers globally
            interval = int(text.get("no_rope_layer_interval") or 4)
            no_rope = text.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(num_layers)]
            names = ["chunked_attention" if flag else "full_attention" for flag in no_rope]
        elif window is not None and model_type in SLIDING_PATTERN_DEFAULTS:
            pattern = int(text.get("sliding_window_pattern") or SLIDING_PATTERN_DEFAULTS[model_type])
            names = [
                "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)
            ]
        elif window is not None and model_type in ALTERNATING_SLIDING:
            names = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)]
        elif window is not None and text.get("max_window_layers") is not None and "qwen" in model_type:
            start = int(text["max_window_layers"])
            names = ["sliding_attention" if i >= start else "full_attention" for i in range(num_layers)]
        elif window is not None:
            names = ["sliding_attention"] * num_layers  # a model-level window (Mistral-7B-v0.1)
        else:
            names = ["full_attention"] * num_layers
    kinds: list[LayerAttention] = []
    for name in list(names)[:num_layers]:
        if name == "sliding_attention" and window is not None:
            kinds.append("sliding")
        elif name == "chunked_attention" and chunk is not None:
            kinds.append("chunked")
        elif name == "linear_attention" and state is not None:
            kinds.append("linear")
        elif name in hybrid_layers.MIXERLESS_NAMES and state is not None:
            kinds.append("none")
        else:
            kinds.append("full")
    return tuple(kinds)


def _attention_layout(
    text: dict[str, Any], model_type: str, num_layers: int, kv_heads: int, head_dim: int
) -> AttentionLayout:
    text = shared_kv_layers.with_gemma4_defaults(text, model_type, num_layers)
    state = linear_attention_state(text, model_type)
    kinds = _layer_kinds(text, model_type, num_layers, state)
    window = text.get("sliding_window") if "sliding" in kinds else None
    chunk = text.get("attention_chunk_size") if "chunked" in kinds else None
    mtp = mtp_layers.mtp_layer_count(text, model_type)  # Qwen3-Next / Qwen3.5: 1 unless the config says
    if model_type in MLA_MODEL_TYPES and text.get("kv_lora_rank"):
        rope = int(text.get("qk_rope_head_dim") or 0)
        latent = int(text["kv_lora_rank"]) + rope
        indexer_bytes, indexer_layers = sparse_indexer_cache(text, num_layers)
        return AttentionLayout(
            kinds, 1, latent, 0, True, window, chunk, mtp, rope, None, indexer_bytes, indexer_layers
        )
    full_heads, full_size = shared_kv_layers.gemma4_full_attention(text, model_type, kv_heads)
    if (full_heads, full_size) == (kv_heads, head_dim):
        full_heads, full_size = 0, 0
    return AttentionLayout(
        kinds,
        kv_heads,
        head_dim,
        head_dim,
        False,
        window,
        chunk,
        mtp,
        state=state,
        full_num_kv_heads=full_heads if full_size else 0,
        full_head_size=full_size,
        kv_shared_layers=shared_kv_layers.kv_shared_layers(text, model_type, num_layers),
        vision_bidirectional=model_type in GEMMA4_TEXT_MODEL_TYPES
        and text.get("use_bidirectional_attention") == "vision",
    )


def read_architecture(config: dict[str, Any], folder: Path) -> Architecture:
    """Pulls the shape numbers out of a config, whatever the model family calls them."""
    text = text_config(config)
    defaults = hybrid_layers.hybrid_defaults(text)  # Nemotron-H's layer count where the file has none
    text = lfm2_config({**CONFIG_CLASS_DEFAULTS.get(str(text.get("model_type")), {}), **defaults, **text})
    architectures = config.get("architectures") or text.get("architectures") or []
    architecture = str(architectures[0]) if architectures else str(text.get("model_type", "unknown"))
    model_type = str(text.get("model_type") or config.get("model_type") or "unknown")
    model_type = BUILT_AS_MODEL_TYPE.get(model_type, model_type)
    if model_type == "minicpmv":  # one model type, a language model per version
        model_type = minicpmv_language_model_type(config)
    if str(config.get("model_type")) in DRAFT_ONLY_MODEL_TYPES:
        raise ModelError(
            f"{folder} is a {config.get('model_type')} draft checkpoint, which vLLM loads only as the "
            "--speculative-config model of its main Gemma 4 model; pass the main model's folder"
        )
    try:
        num_layers = int(first_key(text, "num_hidden_layers", "n_layer", "num_layers", "n_layers"))
        hidden_size = int(first_key(text, "hidden_size", "n_embd", "d_model", "dim"))
        heads = int(first_key(text, "num_attention_heads", "n_head", "num_heads", "n_heads"))
    except (TypeError, ValueError):
        raise ModelError(
            f"{folder / 'config.json'} lacks num_hidden_layers/hidden_size/num_attention_heads; "
            "quant-tui supports decoder-only transformer language models"
        ) from None
    kv_heads = int(first_key(text, "num_key_value_heads", "num_kv_heads", "n_head_kv", default=heads))
    if text.get("multi_query"):
        kv_heads = 1
    head_dim = int(first_key(text, "head_dim", default=0) or hidden_size // heads)
    intermediate_value = first_key(
        text, "intermediate_size", "ffn_hidden_size", "n_inner", default=4 * hidden_size
    )
    if isinstance(
        intermediate_value, list
    ):  # one width per layer (Gemma 3n): the first here, each in param_count
        intermediate_value = intermediate_value[0] if intermediate_value else 4 * hidden_size
    intermediate = int(intermediate_value)
    tie_default = model_type not in UNTIED_BY_DEFAULT
    dtype = first_key(
        text, "torch_dtype", "dtype", default=first_key(config, "torch_dtype", "dtype", default="bfloat16")
    )
    return Architecture(
        config=config,
        text=text,
        architecture=architecture,
        model_type=model_type,
        num_layers=num_layers,
        hidden_size=hidden_size,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=int(first_key(text, "vocab_size", "padded_vocab_size", default=32000)),
        max_context=int(
            first_key(
                text,
                "max_position_embeddings",
                "max_sequence_length",
                "n_positions",
                "seq_length",
                default=2048,
            )
        ),
        tie_word_embeddings=bool(
            first_key(
                text,
                "tie_word_embeddings",
                default=first_key(config, "tie_word_embeddings", default=tie_default),
            )
        ),
        torch_dtype=str(dtype),
        attention=_attention_layout(text, model_type, num_layers, kv_heads, head_dim),
        moe=read_moe_layout(text, model_type, num_layers, intermediate),
        attention_bias=bool(first_key(text, "attention_bias", default=model_type in _QKV_BIAS_MODEL_TYPES)),
        # GLM-4-MoE: vLLM's Glm4MoeAttention builds q_norm / k_norm only when use_qk_norm (GLM-4.5, not -Air).
        qk_norm=model_type in QK_NORM_MODEL_TYPES
        or model_type in GEMMA4_TEXT_MODEL_TYPES  # Gemma4Attention: q_norm, k_norm (v_norm has no weight)
        or (model_type == "glm4_moe" and bool(text.get("use_qk_norm"))),
        is_multimodal=has_towers(config) or text_config(config) is not config,
    )
