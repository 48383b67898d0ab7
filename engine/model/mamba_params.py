"""Parameters of vLLM's Mamba mixers (Mamba2: Granite-4.0-H, Nemotron-H; Mamba1: Jamba; short conv: LFM2) from config.json."""

from __future__ import annotations

from engine.model.architecture import Architecture
from engine.model.config_json import first_key
from engine.model.lfm2_layers import short_conv_shapes
from engine.model.linear_shape import LinearShape


def mamba_mixer_shapes(arch: Architecture, layers: int) -> tuple[list[LinearShape], int]:
    """The Mamba mixer's matrices over ``layers`` layers and its vector parameters per layer.

    Mamba2 (vllm/model_executor/layers/mamba/mamba_mixer2.py::MambaMixer2): in_proj (x, z: heads ×
    head dim; B, C: groups × state; dt: one per head), out_proj; conv1d (conv_dim × kernel) with its
    bias (Granite's ``mamba_conv_bias``, Nemotron-H's ``use_conv_bias``, default True), dt_bias, A,
    D (one per head) and the gated RMSNorm (heads × head dim; Falcon-H1 only with ``mamba_rms_norm``)
    as vectors. Mamba1 (``_mamba1``); LFM2's ShortConv (``lfm2_layers.short_conv_shapes``).
    """
    state = arch.attention.state
    if state is None or not layers:
        return [], 0
    if state.mixer == "mamba1":
        return _mamba1(arch, layers)
    if (
        state.mixer == "short_conv"
    ):  # the state holds the conv's channels and width (short_conv_dim, conv_L_cache)
        return short_conv_shapes(state.conv_dim, state.conv_kernel, bool(arch.text.get("conv_bias")), layers)
    h = arch.hidden_size
    keys, values = state.key_heads * state.key_dim, state.value_heads * state.value_dim
    shapes = [
        LinearShape(
            "mamba.in_proj", "linear_attention", h, 2 * values + 2 * keys + state.value_heads, layers
        ),
        LinearShape("mamba.out_proj", "linear_attention", values, h, layers),
    ]
    conv_bias = (
        state.conv_dim if first_key(arch.text, "mamba_conv_bias", "use_conv_bias", default=True) else 0
    )
    norm = (
        values if arch.text.get("mamba_rms_norm", True) else 0
    )  # Falcon-H1's mamba_rms_norm (default False)
    return shapes, state.conv_dim * state.conv_kernel + conv_bias + 3 * state.value_heads + norm


def _mamba1(arch: Architecture, layers: int) -> tuple[list[LinearShape], int]:
    """Jamba's Mamba1 mixer (vllm/model_executor/layers/mamba/mamba_mixer.py::MambaMixer).

    in_proj (x and z: 2 × inner), x_proj (dt rank + B + C), dt_proj (rank → inner, with a bias),
    out_proj, all built without the quantization config (so "unquantized", kept 16-bit); conv1d (inner × kernel, with ``mamba_conv_bias``, default True), A (inner × state), D,
    and Jamba's dt / B / C RMSNorms (``use_rms_norm=True``) are vectors here.
    """
    state, h = arch.attention.state, arch.hidden_size
    assert state is not None
    inner, n = state.value_heads, state.key_dim
    rank = arch.text.get("mamba_dt_rank")
    rank = int(rank) if isinstance(rank, int) else -(-h // 16)  # JambaConfig: "auto" is ceil(h / 16)
    shapes = [
        LinearShape("mamba.in_proj", "unquantized", h, 2 * inner, layers),
        LinearShape("mamba.x_proj", "unquantized", inner, rank + 2 * n, layers),
        LinearShape("mamba.dt_proj", "unquantized", rank, inner, layers),
        LinearShape("mamba.out_proj", "unquantized", inner, h, layers),
    ]
    conv_bias = inner if arch.text.get("mamba_conv_bias", True) else 0
    # conv1d + its bias, dt_proj's bias, A, D, dt / B / C norms
    return shapes, inner * state.conv_kernel + conv_bias + inner + inner * n + inner + rank + 2 * n
