"""The vLLM server command line and environment built from a ServerConfig on each backend."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.plan.plan_request import PlanRequest
from engine.plan.server_config import ServerConfig
from engine.serve.ports import port_is_free
from engine.serve.server_command import build_command, default_cpu_kvcache_gib, plan_request_for

GIB = 1024**3
MODEL = Path("/models/tiny")


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


@pytest.mark.parametrize(
    ("config", "expected_pairs", "expected_flags", "absent"),
    [
        (
            ServerConfig(model=MODEL, port=8123),
            {"--host": "127.0.0.1", "--port": "8123"},
            [],
            ["--dtype", "--quantization", "--kv-cache-dtype", "--max-model-len", "--enforce-eager"],
        ),
        (
            ServerConfig(
                model=MODEL,
                port=9000,
                dtype="bfloat16",
                quantization="fp8",
                kv_cache_dtype="fp8",
                max_model_len=4096,
                gpu_memory_utilization=0.85,
                tensor_parallel_size=2,
                pipeline_parallel_size=2,
                enforce_eager=True,
                served_model_name="tiny",
                distributed_executor_backend="ray",
            ),
            {
                "--dtype": "bfloat16",
                "--quantization": "fp8",
                "--kv-cache-dtype": "fp8",
                "--max-model-len": "4096",
                "--gpu-memory-utilization": "0.85",
                "--tensor-parallel-size": "2",
                "--pipeline-parallel-size": "2",
                "--served-model-name": "tiny",
                "--distributed-executor-backend": "ray",
            },
            ["--enforce-eager"],
            [],
        ),
        (
            ServerConfig(model=MODEL, port=9001, tensor_parallel_size=1, pipeline_parallel_size=1),
            {},
            [],
            ["--tensor-parallel-size", "--pipeline-parallel-size", "--distributed-executor-backend"],
        ),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "cuda"])
def test_build_command_flags(
    config: ServerConfig,
    expected_pairs: dict[str, str],
    expected_flags: list[str],
    absent: list[str],
    backend: str,
) -> None:
    argv, _ = build_command(config, backend)
    for name, value in expected_pairs.items():
        assert _flag(argv, name) == value, name
    for name in expected_flags:
        assert name in argv
    for name in absent:
        assert name not in argv


@pytest.mark.parametrize(
    ("backend", "head"),
    [
        ("cpu", [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL)]),
        ("cuda", ["serve", str(MODEL)]),
    ],
)
def test_entry_point_per_backend(backend: str, head: list[str]) -> None:
    argv, _ = build_command(ServerConfig(model=MODEL, port=8000), backend)
    if backend == "cpu":
        assert argv[: len(head)] == head
    else:
        # `vllm serve MODEL`, through the console script beside this interpreter when there is one.
        index = argv.index("serve")
        assert argv[index : index + 2] == head
        assert Path(argv[0]).name in ("vllm", Path(sys.executable).name)


@pytest.mark.parametrize(
    ("gib", "env_value", "flag_value"),
    [(None, "default", None), (2, "2", None), (3.0, "3", None), (1.5, None, str(int(1.5 * GIB)))],
)
def test_cpu_kv_cache_space(gib: float | None, env_value: str | None, flag_value: str | None) -> None:
    argv, env = build_command(ServerConfig(model=MODEL, port=8000, cpu_kvcache_gib=gib), "cpu")
    if env_value == "default":
        # No config.json to plan from: the CPU rule's minimum.
        assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    else:
        assert env.get("VLLM_CPU_KVCACHE_SPACE") == env_value
    assert _flag(argv, "--kv-cache-memory-bytes") == flag_value


def test_gpu_backend_sets_no_cpu_space() -> None:
    _, env = build_command(ServerConfig(model=MODEL, port=8000, cpu_kvcache_gib=2), "cuda")
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_api_key_goes_through_the_environment_not_argv() -> None:
    argv, env = build_command(ServerConfig(model=MODEL, port=8000, api_key="s3cret"), "cpu")
    assert "s3cret" not in " ".join(argv)
    assert env["VLLM_API_KEY"] == "s3cret"


def test_extra_args_come_last_and_verbatim() -> None:
    extra = ("--enable-prefix-caching", "--seed", "7")
    argv, _ = build_command(ServerConfig(model=MODEL, port=8000, extra_args=extra), "cpu")
    assert tuple(argv[-3:]) == extra


def test_offline_and_unbuffered() -> None:
    _, env = build_command(ServerConfig(model=MODEL, port=8000), "cpu")
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_port_none_picks_a_free_port() -> None:
    argv, _ = build_command(ServerConfig(model=MODEL), "cpu")
    port = int(_flag(argv, "--port") or 0)
    assert 1024 <= port <= 65535
    assert port_is_free("127.0.0.1", port)


def test_unknown_backend() -> None:
    with pytest.raises(QuantTuiError, match="unknown backend"):
        build_command(ServerConfig(model=MODEL, port=8000), "tpu")


def test_default_cpu_kvcache_gib_without_a_model() -> None:
    assert default_cpu_kvcache_gib(ServerConfig(model=MODEL)) == 1


@pytest.mark.parametrize(
    ("config", "request_"),
    [
        (ServerConfig(model=Path("m")), PlanRequest(kv_cache_dtype="auto")),
        (
            ServerConfig(model=Path("m"), max_model_len=512, dtype="float32", max_num_seqs=8),
            PlanRequest(max_model_len=512, dtype="float32", kv_cache_dtype="auto", max_num_seqs=8),
        ),
        (
            ServerConfig(model=Path("m"), kv_cache_dtype="fp8", max_num_batched_tokens=1024),
            PlanRequest(kv_cache_dtype="fp8", max_num_batched_tokens=1024),
        ),
        # Values only vLLM knows (passed through) plan as its defaults instead of failing.
        (ServerConfig(model=Path("m"), dtype="float64", kv_cache_dtype="int8"), PlanRequest()),
        # VLLM_PP_LAYER_PARTITION travels with the stages it is checked against.
        (
            ServerConfig(model=Path("m"), pipeline_parallel_size=2, layer_partition=(20, 12)),
            PlanRequest(kv_cache_dtype="auto", pipeline_parallel_size=2, layer_partition=(20, 12)),
        ),
        (
            ServerConfig(model=Path("m"), layer_partition=(32,)),
            PlanRequest(kv_cache_dtype="auto", layer_partition=(32,)),
        ),
    ],
)
def test_a_config_plans_as_the_request_it_stands_for(config: ServerConfig, request_: PlanRequest) -> None:
    assert plan_request_for(config) == request_


CONFIGS = Path(__file__).parents[1] / "fixtures" / "configs"


@pytest.mark.parametrize(
    ("partition", "error"),
    [
        ((32,), None),  # Llama-3.1-8B's 32 layers on one stage
        # vLLM's get_pp_indices: sum(partitions)=30 does not match num_hidden_layers=32.
        (
            (30,),
            "VLLM_PP_LAYER_PARTITION='30' must give its one pipeline stage at least one layer, 32 in all",
        ),
    ],
)
def test_a_configs_layer_partition_is_planned_as_vllm_checks_it(
    tmp_path: Path, partition: tuple[int, ...], error: str | None
) -> None:
    from engine.plan.recommender import plan_checkpoint

    (tmp_path / "config.json").write_text((CONFIGS / "llama-3.1-8b.json").read_text())
    request = plan_request_for(ServerConfig(model=tmp_path, layer_partition=partition))
    if error is not None:
        with pytest.raises(QuantTuiError, match=re.escape(error)):
            plan_checkpoint(tmp_path, request)
        return
    assert plan_checkpoint(tmp_path, request).server.layer_partition == partition


# quant-tui's three entry points, as pyproject.toml names them (read by hand, not from the code under test).
OUR_PLUGINS = "quant_tui_amx_permission,quant_tui_cpu_isa,quant_tui_cpu_isa_early"


@pytest.mark.parametrize(
    ("allow_list", "expected"),
    [
        (None, None),  # no allow-list: vLLM loads every plugin, ours included
        ("other", f"other,{OUR_PLUGINS}"),
        ("", OUR_PLUGINS),  # vLLM reads "" as an allow-list naming nothing
        (
            "quant_tui_cpu_isa,other",
            "quant_tui_cpu_isa,other,quant_tui_amx_permission,quant_tui_cpu_isa_early",
        ),
        (f"other,{OUR_PLUGINS}", None),  # all named already: the user's own value stands
    ],
)
def test_a_users_plugin_allow_list_keeps_quant_tuis_plugins(
    allow_list: str | None, expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if allow_list is None:
        monkeypatch.delenv("VLLM_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("VLLM_PLUGINS", allow_list)
    _, env = build_command(ServerConfig(model=MODEL, port=8000), "cpu")
    assert env.get("VLLM_PLUGINS") == expected
