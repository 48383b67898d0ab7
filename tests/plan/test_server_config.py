"""ServerConfig: bad values are one-line errors, safe bindings are accepted, loopback hosts are recognised."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.plan.server_config import ServerConfig, is_loopback

MODEL = Path("/models/tiny")


def test_model_may_be_given_as_str() -> None:
    assert ServerConfig(model=str(MODEL)).model == MODEL  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "exposes the server"),
        ({"host": "192.168.1.5", "api_key": "k"}, "exposes the server"),
        ({"host": "0.0.0.0", "allow_remote": True}, "needs an API key"),
        ({"host": "::", "allow_remote": True, "api_key": ""}, "needs an API key"),
        ({"port": 0}, "out of range"),
        ({"port": 70000}, "out of range"),
        ({"max_model_len": 0}, "--max-model-len must be at least 1, got 0"),
        ({"gpu_memory_utilization": 1.5}, "fraction"),
        ({"gpu_memory_utilization": 0}, "fraction"),
        ({"tensor_parallel_size": 0}, "--tensor-parallel-size must be at least 1, got 0"),
        ({"cpu_kvcache_gib": 0}, "more than 0"),
    ],
)
def test_bad_config_is_one_line_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(QuantTuiError, match=message) as caught:
        ServerConfig(model=MODEL, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"host": "localhost"},
        {"host": "::1"},
        {"host": "127.0.0.2"},
        {"host": "0.0.0.0", "allow_remote": True, "api_key": "k"},
    ],
)
def test_good_binding(kwargs: dict[str, object]) -> None:
    ServerConfig(model=MODEL, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
