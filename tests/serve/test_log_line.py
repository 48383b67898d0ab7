"""One vLLM log line split into its level and its message."""

from __future__ import annotations

import pytest

from engine.serve.log_line import strip_log_prefix


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        (
            "(APIServer pid=21145) INFO 11-23 21:05:44 [entry.py:140] Starting vLLM server on http://127.0.0.1:47867",
            "INFO",
            "Starting vLLM server on http://127.0.0.1:47867",
        ),
        (
            "(EngineCore pid=21756) ERROR 11-23 21:06:35 [core.py:1510] ValueError: No available memory",
            "ERROR",
            "ValueError: No available memory",
        ),
        (
            "INFO 03-01 10:00:05 [kv_cache_utils.py:634] GPU KV cache size: 1 tokens",
            "INFO",
            "GPU KV cache size: 1 tokens",
        ),
        ("OSError: [Errno 98] Address already in use", None, "OSError: [Errno 98] Address already in use"),
        ("INFO:     Application startup complete.", None, "INFO:     Application startup complete."),
    ],
)
def test_strip_log_prefix(line: str, level: str | None, message: str) -> None:
    assert strip_log_prefix(line) == (level, message)
