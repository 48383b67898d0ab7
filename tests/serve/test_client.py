"""Tests for engine.serve.client: URL forms, the Bearer header, the key file, redaction, errors in one line."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import httpx
import pytest

from engine.serve.client import (
    API_KEY_ENV,
    ServerClientError,
    auth_headers,
    base_url,
    describe_http_failure,
    detokenize,
    metrics_url,
    read_api_key,
    redact,
    redact_argv,
    redact_environment,
    served_model_name,
    server_url,
    tokenize,
)
from tests.bench.local_server import QuietHandler, local_server


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


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("localhost", 80, "http://localhost:80"),
        ("::1", 9000, "http://[::1]:9000"),
    ],
)
def test_server_url(host: str, port: int, expected: str) -> None:
    assert server_url(host, port) == expected


@pytest.mark.parametrize(
    ("file_line", "key", "env", "expected"),
    [
        # The file wins over everything; then the key given (--api-key, or its $VLLM_API_KEY default);
        # then $QUANT_TUI_API_KEY; else no key.
        ("from-file", "from-arg", "from-env", "from-file"),
        (None, "from-arg", "from-env", "from-arg"),
        (None, None, "from-env", "from-env"),
        (None, "", "from-env", "from-env"),
        (None, None, None, None),
    ],
)
def test_api_key_resolution_order(
    tmp_path: Path, file_line: str | None, key: str | None, env: str | None, expected: str | None
) -> None:
    key_file = None
    if file_line is not None:
        key_file = tmp_path / "key"
        key_file.write_text(file_line + "\n")
    environ = {API_KEY_ENV: env} if env is not None else {}
    assert read_api_key(key_file, environ, key=key) == expected


def _status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://h:1/metrics")
    return httpx.HTTPStatusError("x", request=request, response=httpx.Response(status, request=request))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            httpx.ConnectError("refused"),
            "cannot reach U (connection refused or no route); is the server running?",
        ),
        (httpx.ReadTimeout("slow"), "no answer from U within 2.5 s; the server is stuck or the URL is wrong"),
        (
            _status_error(401),
            "U refused the request (HTTP 401); pass the server's key (--api-key or --api-key-file)",
        ),
        (
            _status_error(403),
            "U refused the request (HTTP 403); pass the server's key (--api-key or --api-key-file)",
        ),
        (_status_error(404), "U answered HTTP 404; is this a vLLM server?"),
        (
            _status_error(503),
            "U answered HTTP 503: the server is up but failing (its engine may have died); its log says why",
        ),
        (httpx.RemoteProtocolError("peer closed\nconnection"), "reading U failed: peer closed connection"),
    ],
)
def test_http_failures_are_described_in_one_line(error: Exception, expected: str) -> None:
    assert describe_http_failure(error, "U", 2.5) == expected


# (what the server answers: status and body, what tokenize gives or the error it raises, with U its URL)
TOKENIZE_ANSWERS = [
    ((200, {"count": 3, "tokens": [5, 1, 9]}), [5, 1, 9]),
    ((404, {"detail": "Not Found"}), "U/tokenize answered HTTP 404; is this a vLLM server?"),
    (
        (401, {"error": "Unauthorized"}),
        "U/tokenize refused the request (HTTP 401); pass the server's key (--api-key or --api-key-file)",
    ),
    ((200, {"count": 2}), "U/tokenize answered no token list; is this a vLLM server?"),
    ((200, {"tokens": ["a", "b"]}), "U/tokenize answered no token list; is this a vLLM server?"),
    ((200, [1, 2]), "U/tokenize answered no JSON object; is this a vLLM server?"),
]


def _answering(status: int, body: object, seen: list[tuple[str, dict[str, object], str | None]]) -> type:
    class Handler(QuietHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, request, self.headers.get("Authorization")))
            self.send_body(json.dumps(body).encode(), status=status)

    return Handler


async def _tokenize(root: str, text: str) -> list[int]:
    async with aiohttp.ClientSession() as session:
        return await tokenize(session, root, auth_headers("k"), "m", text)


async def _detokenize(root: str, tokens: list[int]) -> str:
    async with aiohttp.ClientSession() as session:
        return await detokenize(session, root, auth_headers("k"), "m", tokens)


@pytest.mark.parametrize(("answer", "expected"), TOKENIZE_ANSWERS)
def test_tokenize_asks_vllm_and_describes_failures_in_one_line(
    answer: tuple[int, object], expected: list[int] | str
) -> None:
    seen: list[tuple[str, dict[str, object], str | None]] = []
    with local_server(_answering(*answer, seen)) as root:
        if isinstance(expected, list):
            assert asyncio.run(_tokenize(root, "a b c")) == expected
        else:
            with pytest.raises(ServerClientError) as raised:
                asyncio.run(_tokenize(root, "a b c"))
            assert str(raised.value) == expected.replace("U", root)
    assert seen == [("/tokenize", {"model": "m", "prompt": "a b c", "add_special_tokens": False}, "Bearer k")]


def test_detokenize_gives_the_servers_text() -> None:
    seen: list[tuple[str, dict[str, object], str | None]] = []
    with local_server(_answering(200, {"prompt": " a b"}, seen)) as root:
        assert asyncio.run(_detokenize(root, [5, 1])) == " a b"
    assert seen == [("/detokenize", {"model": "m", "tokens": [5, 1]}, "Bearer k")]


def test_tokenize_on_a_closed_port_says_the_server_is_unreachable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        root = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: refused
        with pytest.raises(ServerClientError) as raised:
            asyncio.run(_tokenize(root, "a"))
    assert (
        str(raised.value)
        == f"cannot reach {root}/tokenize (connection refused or no route); is the server running?"
    )
