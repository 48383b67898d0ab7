"""One vLLM log line split into its level and its message (the prefix and colour codes removed)."""

from __future__ import annotations

import re
from typing import Literal, cast

__all__ = ["LogLevel", "strip_log_prefix"]

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# vLLM's log prefix: "(APIServer pid=12) INFO 11-23 20:51:02 [file.py:123] message"; older builds
# have no process tag, and lines from a worker process carry "(EngineCore pid=34)".
_PREFIX = re.compile(
    r"^(?:\x1b\[[0-9;]*m)*(?:\((?P<proc>[\w\s]+?)(?: pid=\d+)?\)\s+)?"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d\s+[\d:.]+\s+\[[^\]]*\]\s?"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def strip_log_prefix(line: str) -> tuple[LogLevel | None, str]:
    """Splits a vLLM log line into its level (``None`` when it has none) and the message."""
    line = line.rstrip("\n")
    match = _PREFIX.match(line)
    if match is None:
        return None, _ANSI.sub("", line)
    return cast(LogLevel, match.group("level")), _ANSI.sub("", line[match.end() :])
