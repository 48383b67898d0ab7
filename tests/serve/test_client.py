"""Tests for engine.serve.client: URL forms, the Bearer header, the key file, redaction, errors in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.serve.client import (
    API_KEY_ENV,
    ServerClientError,
    auth_headers,
    base_url,
    metrics_url,
    read_api_key,
    redact,
    redact_argv,
    redact_environment,
    served_model_name,
)


@pytest.mark.parametrize(
    ("given", "base", "metrics"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("127.0.0.1:8000/v1/", "http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("http://127.0.0.1:8000/metrics", "http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("https://box.example/vllm/v1?x=1", "https://box.example/vllm", "https://box.example/vllm/metrics"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000", "http://127.0.0.1:8000/metrics"),
        ("https://box.example/vllm/", "https://box.example/vllm", "https://box.example/vllm/metrics"),
        ("  http://localhost:9000  ", "http://localhost:9000", "http://localhost:9000/metrics"),
    ],
)
def test_url_forms(given: str, base: str, metrics: str) -> None:
    assert base_url(given) == base and metrics_url(given) == metrics


@pytest.mark.parametrize("bad", ["", "   ", " / ", "ftp://host", "ftp://host/x", "http://"])
def test_bad_urls(bad: str) -> None:
    with pytest.raises(ServerClientError) as caught:
        base_url(bad)
    assert "\n" not in str(caught.value)


def test_headers_and_key_sources(tmp_path: Path) -> None:
    assert auth_headers(None) == {} and auth_headers("") == {}
    assert auth_headers("k") == {"Authorization": "Bearer k"}
    key_file = tmp_path / "key"
    key_file.write_text("  s3cret \nsecond line\n")
    assert read_api_key(key_file, {API_KEY_ENV: "from-env"}) == "s3cret"
    assert read_api_key(None, {API_KEY_ENV: " from-env "}) == "from-env"
    assert read_api_key(None, {}) is None
    (tmp_path / "empty").write_text("\n")
    for bad in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(ServerClientError):
            read_api_key(bad, {})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--model", "m", "--api-key", "s3", "--port", "1"],
            ["--model", "m", "--api-key", "<redacted>", "--port", "1"],
        ),
        (["--api-key=s3"], ["--api-key=<redacted>"]),
        (["--hf-token", "t"], ["--hf-token", "<redacted>"]),
        (["--max-model-len", "1024"], ["--max-model-len", "1024"]),
    ],
)
def test_redact_argv(argv: list[str], expected: list[str]) -> None:
    assert redact_argv(argv) == expected


def test_redact_environment_and_text() -> None:
    env = redact_environment({"VLLM_API_KEY": "s3", "HF_TOKEN": "t", "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert env == {"VLLM_API_KEY": "<redacted>", "HF_TOKEN": "<redacted>", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert redact("HTTP 401 for key s3", ["s3", None]) == "HTTP 401 for key <redacted>"


def test_unreachable_server_is_one_line() -> None:
    with pytest.raises(ServerClientError, match="cannot reach") as caught:
        served_model_name("http://127.0.0.1:1", timeout_s=2)
    assert "\n" not in str(caught.value)
