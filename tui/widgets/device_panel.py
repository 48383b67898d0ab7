"""DevicePanel: one line per GPU (memory with the server's share, utilisation, power, temperature), or the host and server tree."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import RenderResult
from textual.geometry import Size
from textual.widget import Widget

from tui.format import GIB, compact_number, size

if TYPE_CHECKING:
    from engine.hardware.detect import GpuInfo, HostInfo
    from engine.telemetry.snapshot import TelemetrySnapshot

# Cell widths: a GPU's full line, and the compact one used when the full ones need too many rows.
FULL_CELL = 74
COMPACT_CELL = 36
_GAP = 2
# Rows the panel may take: a tall terminal shows 8 GPUs one per row; a short one half as many rows.
TALL_TERMINAL_ROWS = 30


def _bar(width: int, total: float | None, server: float | None, used: float | None) -> Text:
    """A memory bar: the server's share solid, other processes' memory shaded, free space light."""
    bar = Text("▕")
    if not total:
        bar.append("?" * width, style="dim")
    else:
        own = min(server or 0.0, used or 0.0)
        own_cells = round(width * own / total)
        used_cells = max(own_cells, round(width * min(used or 0.0, total) / total))
        bar.append("█" * own_cells, style="green")
        bar.append("▒" * (used_cells - own_cells), style="yellow")
        bar.append("░" * (width - used_cells), style="dim")
    bar.append("▏")
    return bar


def _gib(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value / GIB:.{digits}f}"


def _heat(value: float | None, warm: float, hot: float) -> str:
    if value is None:
        return "dim"
    return "red" if value >= hot else "yellow" if value >= warm else ""


def gpu_cell(gpu: GpuInfo, server_bytes: int | None, compact: bool) -> Text:
    """One GPU as a line: index, memory bar and figures, utilisation, power against its limit, temperature."""
    used, total = gpu.memory_used_bytes, gpu.memory_total_bytes
    util = "-" if gpu.utilization_percent is None else f"{gpu.utilization_percent:3.0f}%"
    temperature = "-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
    power = "-" if gpu.power_w is None else f"{gpu.power_w:.0f}"
    limit = "" if gpu.power_limit_w is None else f"/{gpu.power_limit_w:.0f}"
    line = Text()
    if compact:
        line.append(f"{gpu.index}", style="bold")
        line.append_text(_bar(8, total, server_bytes, used))
        line.append(f"{_gib(used, 0)}/{_gib(total, 0)}G ")
        line.append(util, style=_heat(gpu.utilization_percent, 101, 101))
        line.append(f" {power}W ")
        line.append(temperature, style=_heat(gpu.temperature_c, 75, 85))
        return line
    line.append(f"GPU{gpu.index:<2}", style="bold")
    line.append_text(_bar(14, total, server_bytes, used))
    line.append(f" {_gib(used)}/{_gib(total)} GiB")
    line.append(f" vLLM {_gib(server_bytes)}" if server_bytes is not None else " vLLM -", style="green")
    line.append("  util ")
    line.append(util)
    line.append(f"  {power}{limit} W", style=_heat(_ratio(gpu.power_w, gpu.power_limit_w), 0.85, 0.97))
    line.append("  ")
    line.append(temperature, style=_heat(gpu.temperature_c, 75, 85))
    return line


def _ratio(value: float | None, limit: float | None) -> float | None:
    return value / limit if value is not None and limit else None


def host_lines(snapshot: TelemetrySnapshot, width: int, rows: int) -> list[Text]:
    """The host (RAM bar, CPU) and the server's processes, as many as fit in ``rows``."""
    host: HostInfo | None = snapshot.host
    lines: list[Text] = []
    if host is not None:
        used = host.memory_total_bytes - host.memory_available_bytes
        line = Text("Host ", style="bold")
        line.append_text(_bar(14, host.memory_total_bytes, snapshot.server_rss_bytes, used))
        line.append(f" RAM {_gib(used)}/{_gib(host.memory_total_bytes)} GiB")
        if snapshot.server_rss_bytes is not None:
            line.append(f", server {size(snapshot.server_rss_bytes)}", style="green")
        cpu = "-" if host.cpu_percent is None else f"{host.cpu_percent:.0f}%"
        line.append(f"  CPU {cpu} ({host.logical_cores} cores)")
        lines.append(line)
    processes = snapshot.server_processes
    room = max(0, rows - len(lines))
    shown = processes if len(processes) <= room else processes[: max(0, room - 1)]
    for process in shown:
        line = Text(f"  {process.pid:>7} ", style="dim")
        line.append(f"{process.name[:22]:<22}", style="bold")
        line.append(f" CPU {process.cpu_percent:5.0f}%  RSS {size(process.rss_bytes)}")
        lines.append(line)
    if len(shown) < len(processes):
        lines.append(Text(f"  … {len(processes) - len(shown)} more server processes", style="dim"))
    if not lines:
        lines.append(Text("no hardware sample yet", style="dim"))
    return [line[:width] if line.cell_len > width else line for line in lines]


class DevicePanel(Widget):
    """The devices under the server: per-GPU lines from NVML, or the host and the server's process tree.

    With many GPUs the lines pack two (or more) to a row when the panel is wide, and switch to a
    compact form when the full form would need more rows than the terminal can spare.
    """

    DEFAULT_CSS = """
    DevicePanel {
        height: auto;
        border: round $primary 50%;
        border-title-color: $text;
        border-title-align: left;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        """Creates an empty panel."""
        super().__init__(id=id)
        self.border_title = "Devices"
        self.snapshot: TelemetrySnapshot | None = None
        self._key: object = None

    def show(self, snapshot: TelemetrySnapshot) -> None:
        """Shows a snapshot's GPUs, host and server processes (redrawn only when they changed)."""
        previous, self.snapshot = self.snapshot, snapshot
        # Compared as the text shown: a CPU share moving by a tenth of a percent redraws nothing.
        width = self.size.width
        key = (self._title(snapshot), [line.plain for line in self.layout_lines(width)], width)
        if key == self._key and previous is not None:
            return
        # Layout (the whole screen reflowed and repainted) only when the panel's height changes;
        # new figures in the same lines repaint the panel alone.
        resized = not isinstance(self._key, tuple) or len(self._key[1]) != len(key[1])
        self._key = key
        self.border_title = key[0]
        self.refresh(layout=resized)

    @staticmethod
    def _title(snapshot: TelemetrySnapshot) -> str:
        if not snapshot.gpus:
            return "Host and server processes"
        names = {gpu.name for gpu in snapshot.gpus}
        name = names.pop() if len(names) == 1 else "mixed"
        title = f"{len(snapshot.gpus)} GPU{'s' if len(snapshot.gpus) > 1 else ''} · {name}"
        known = [value for value in snapshot.server_gpu_memory_bytes if value is not None]
        if known:
            title += f" · vLLM holds {compact_number(sum(known) / GIB)} GiB"
        return title

    def _max_rows(self) -> int:
        return 8 if self.app.size.height >= TALL_TERMINAL_ROWS else 4

    def layout_lines(self, width: int) -> list[Text]:
        """The panel's lines at a content width."""
        snapshot = self.snapshot
        if snapshot is None:
            return [Text("waiting for the first sample", style="dim")]
        rows = self._max_rows()
        if not snapshot.gpus:
            return host_lines(snapshot, width, rows)
        count = len(snapshot.gpus)
        compact = False
        per_row = max(1, (width + _GAP) // (FULL_CELL + _GAP))
        cell = FULL_CELL
        if math.ceil(count / per_row) > rows:
            compact, cell = True, COMPACT_CELL
            per_row = max(1, (width + _GAP) // (COMPACT_CELL + _GAP))
        server = snapshot.server_gpu_memory_bytes
        cells = [
            gpu_cell(gpu, server[position] if position < len(server) else None, compact)
            for position, gpu in enumerate(snapshot.gpus)
        ]
        lines = []
        for start in range(0, count, per_row):
            line = Text()
            for offset, item in enumerate(cells[start : start + per_row]):
                if offset:
                    line.append(" " * _GAP)
                item.truncate(cell, pad=True)
                line.append_text(item)
            line.truncate(width)
            lines.append(line)
        if len(lines) > rows:
            hidden = count - (rows - 1) * per_row
            lines = [*lines[: rows - 1], Text(f"… {hidden} more GPUs (widen the terminal)", style="dim")]
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        """As many rows as the lines need."""
        return len(self.layout_lines(width))

    def render(self) -> RenderResult:
        """The lines at the current width."""
        return Text("\n").join(self.layout_lines(self.size.width))
