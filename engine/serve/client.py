"""The one way quant-tui talks to a vLLM server it did not necessarily start: URLs, the Bearer key, the model name, errors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from engine.errors import QuantTuiError

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "API_KEY_ENV",
    "ServerClientError",
    "auth_headers",
    "base_url",
    "describe_http_failure",
    "detokenize",
    "metrics_url",
    "read_api_key",
    "redact",
    "redact_argv",
    "redact_environment",
    "served_model_name",
    "server_url",
    "tokenize",
]

# quant-tui's own variable for a server's key (vLLM's server reads VLLM_API_KEY; clients read this one first).
API_KEY_ENV = "QUANT_TUI_API_KEY"
_EXAMPLE = "pass one like http://127.0.0.1:8000"
_REDACTED = "<redacted>"
# Values of these environment variables or options never leave the process in a result or an error.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)


class ServerClientError(QuantTuiError):
    """The server cannot be addressed or asked as given (bad URL, unreachable, no model, refused key)."""


def base_url(url: str) -> str:
    """The server's root URL (no trailing ``/``, no ``/v1`` or ``/metrics``) from whatever form the user typed.

    Args:
        url: ``http://host:port``, ``host:port``, ``.../v1`` or ``.../metrics``.

    Raises:
        ServerClientError: The URL is empty or not http(s).
    """
    text = url.strip()
    if not text.rstrip("/"):
        raise ServerClientError(f"no server URL given; {_EXAMPLE}")
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as error:
        raise ServerClientError(f"{url!r} is not a URL; {_EXAMPLE}") from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ServerClientError(f"{url!r} is not an http(s) URL; {_EXAMPLE}")
    path = parsed.path.rstrip("/")
    for suffix in ("/metrics", "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return str(parsed.copy_with(path=path or "/", query=None)).rstrip("/")


def server_url(host: str, port: int) -> str:
    """The base URL of a server bound to ``host:port`` (an IPv6 address goes in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def metrics_url(url: str) -> str:
    """The server's ``/metrics`` address from its base URL, ``/v1`` URL or ``/metrics`` URL.

    Raises:
        ServerClientError: The URL is empty or not http(s).
    """
    return base_url(url) + "/metrics"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer <key>`` when there is a key, else no header."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def read_api_key(
    key_file: str | os.PathLike[str] | None,
    environ: Mapping[str, str] | None = None,
    *,
    key: str | None = None,
) -> str | None:
    """The server's API key: from a file (first line), else ``key``, else ``$QUANT_TUI_API_KEY``, else ``None``.

    Every command resolves ``--api-key-file`` / ``--api-key`` / the environment through this one order.
    Prefer the file: a key on the command line is seen by ``ps`` and kept in shell history.

    Args:
        key_file: ``--api-key-file``, when given.
        environ: the environment to read (default: ``os.environ``).
        key: a key given directly (``--api-key``, or its ``$VLLM_API_KEY`` default).

    Raises:
        ServerClientError: The file cannot be read or is empty.
    """
    if key_file is not None:
        try:
            lines = Path(key_file).read_text(encoding="utf-8").strip().splitlines()
        except OSError as error:
            raise ServerClientError(f"cannot read the API key file {key_file} ({error.strerror})") from error
        if not lines or not lines[0].strip():
            raise ServerClientError(f"the API key file {key_file} is empty; put the key on its first line")
        return lines[0].strip()
    if key:
        return key
    value = (environ if environ is not None else os.environ).get(API_KEY_ENV, "").strip()
    return value or None


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced by ``<redacted>`` (keys must never reach a result or an error)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, _REDACTED)
    return text


def redact_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of an environment with the values of key-, token- and password-like variables redacted."""
    return {name: _REDACTED if _SECRET_NAME.search(name) else value for name, value in environ.items()}


def redact_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the value after ``--api-key`` (or ``--api-key=...``) and similar options redacted."""
    result: list[str] = []
    hide_next = False
    for part in argv:
        if hide_next:
            result.append(_REDACTED)
            hide_next = False
            continue
        name, equals, _ = part.partition("=")
        if part.startswith("--") and _SECRET_NAME.search(name):
            if equals:
                result.append(f"{name}={_REDACTED}")
            else:
                result.append(part)
                hide_next = True
            continue
        result.append(part)
    return result


def _unreachable(url: str) -> str:
    return f"cannot reach {url} (connection refused or no route); is the server running?"


def _no_answer(url: str, timeout_s: float) -> str:
    return f"no answer from {url} within {timeout_s:g} s; the server is stuck or the URL is wrong"


def _status_failure(url: str, status: int) -> str:
    if status in (401, 403):
        return (
            f"{url} refused the request (HTTP {status}); pass the server's key (--api-key or --api-key-file)"
        )
    if status >= 500:
        return f"{url} answered HTTP {status}: the server is up but failing (its engine may have died); its log says why"
    return f"{url} answered HTTP {status}; is this a vLLM server?"


def _failed(url: str, error: Exception) -> str:
    return f"reading {url} failed: {' '.join(str(error).split()) or type(error).__name__}"


def describe_http_failure(error: Exception, url: str, timeout_s: float) -> str:
    """One line for a failed HTTP request to the server, saying what to check."""
    if isinstance(error, httpx.ConnectError):
        return _unreachable(url)
    if isinstance(error, httpx.TimeoutException):
        return _no_answer(url, timeout_s)
    if isinstance(error, httpx.HTTPStatusError):
        return _status_failure(url, error.response.status_code)
    return _failed(url, error)


def served_model_name(url: str, api_key: str | None = None, timeout_s: float = 10.0) -> str:
    """The first model the server lists at ``/v1/models``.

    Raises:
        ServerClientError: The server cannot be reached, refuses the key or lists no model.
    """
    models_url = base_url(url) + "/v1/models"
    try:
        response = httpx.get(models_url, headers=auth_headers(api_key), timeout=timeout_s)
        response.raise_for_status()
        models = response.json().get("data") or []
        return str(models[0]["id"])
    except httpx.HTTPError as error:
        raise ServerClientError(describe_http_failure(error, models_url, timeout_s)) from error
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise ServerClientError(
            f"{models_url} lists no model; is this an OpenAI-compatible server?"
        ) from error


async def _post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    timeout_s: float,
) -> dict[str, Any]:
    """The JSON object the server answers to ``body`` POSTed at ``url`` through an async load's session."""
    import asyncio

    import aiohttp

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(url, json=dict(body), headers=dict(headers), timeout=timeout) as response:
            if response.status != 200:
                raise ServerClientError(_status_failure(url, response.status))
            data = await response.json(content_type=None)
    except aiohttp.ClientConnectorError as error:
        raise ServerClientError(_unreachable(url)) from error
    except asyncio.TimeoutError as error:
        raise ServerClientError(_no_answer(url, timeout_s)) from error
    except (aiohttp.ClientError, ValueError) as error:
        raise ServerClientError(_failed(url, error)) from error
    if not isinstance(data, dict):
        raise ServerClientError(f"{url} answered no JSON object; is this a vLLM server?")
    return data


async def tokenize(
    session: aiohttp.ClientSession,
    root: str,
    headers: Mapping[str, str],
    model: str,
    text: str,
    timeout_s: float = 30.0,
) -> list[int]:
    """The token ids of ``text`` (no special tokens added) by the server's own tokenizer (vLLM's ``/tokenize``).

    Args:
        session: the async load's session.
        root: the server's root URL (:func:`base_url`).
        headers: :func:`auth_headers` of the server's key.
        model: the served model name.
        text: the text to encode.
        timeout_s: seconds for the whole call.

    Raises:
        ServerClientError: the server cannot be reached, refuses, has no ``/tokenize`` or answers no token list.
    """
    url = root + "/tokenize"
    answer = await _post_json(
        session, url, {"model": model, "prompt": text, "add_special_tokens": False}, headers, timeout_s
    )
    tokens = answer.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(token, int) for token in tokens):
        raise ServerClientError(f"{url} answered no token list; is this a vLLM server?")
    return tokens


async def detokenize(
    session: aiohttp.ClientSession,
    root: str,
    headers: Mapping[str, str],
    model: str,
    tokens: list[int],
    timeout_s: float = 30.0,
) -> str:
    """The text the server's tokenizer decodes ``tokens`` to (vLLM's ``/detokenize``); arguments as :func:`tokenize`.

    Raises:
        ServerClientError: the server cannot be reached, refuses, has no ``/detokenize`` or answers no text.
    """
    url = root + "/detokenize"
    answer = await _post_json(session, url, {"model": model, "tokens": tokens}, headers, timeout_s)
    prompt = answer.get("prompt")
    if not isinstance(prompt, str):
        raise ServerClientError(f"{url} answered no prompt text; is this a vLLM server?")
    return prompt
