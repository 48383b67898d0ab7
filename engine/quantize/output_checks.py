"""Pre-flight checks on where a quantized checkpoint goes: a new folder outside the source, and room on its disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.errors import QuantTuiError
from engine.units import format_bytes

# Free space kept on top of the estimate: headers, filesystem slack, copied small files.
DISK_MARGIN_BYTES = 64 * 1024 * 1024


def check_output(source: Path, output: Path) -> None:
    """Refuses an output folder that exists or lies inside the source.

    Raises:
        QuantTuiError: the output cannot be created there.
    """
    if output.exists():
        raise QuantTuiError(f"output folder {output} already exists; remove it or pass --out NEW_FOLDER")
    if output.resolve().is_relative_to(source.resolve()):
        raise QuantTuiError(f"output folder {output} is inside the source model; pass --out outside {source}")
    parent = output.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise QuantTuiError(f"cannot write to {parent} (permission denied); pass --out somewhere writable")


def check_disk_space(output: Path, needed_bytes: int) -> None:
    """Refuses to start when the output's filesystem has less free space than the run will write.

    Raises:
        QuantTuiError: not enough free space, with the figures.
    """
    anchor = output.parent
    while not anchor.exists():
        anchor = anchor.parent
    free = shutil.disk_usage(anchor).free
    if free < needed_bytes + DISK_MARGIN_BYTES:
        raise QuantTuiError(
            f"not enough disk space in {anchor}: the output needs about {format_bytes(needed_bytes)}, "
            f"{format_bytes(free)} is free; free some space or pass --out on another disk"
        )
