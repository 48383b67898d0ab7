"""The dashboard's graphs declared as data: which series each plots, in what unit, and its title line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tui.format import GIB, compact_number

Values = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Unit:
    """How a series' raw values are shown: a scale (seconds → ms, fraction → %) and a suffix.

    Attributes:
        suffix: Written after numbers, e.g. ``" tok/s"``, ``" ms"``, ``"%"``.
        scale: Multiplies the raw value before it is shown.
        top: A fixed top of the y axis in shown units (100 for percentages); ``None`` fits the data.
    """

    suffix: str = ""
    scale: float = 1.0
    top: float | None = None

    def text(self, raw: float | None) -> str:
        """A raw value in this unit, short (``1.2k tok/s``); a dash when unknown."""
        if raw is None:
            return "-"
        return f"{compact_number(raw * self.scale)}{self.suffix}"


TOKENS_PER_S = Unit(" tok/s")
MILLISECONDS = Unit(" ms", scale=1000.0)
PERCENT = Unit("%", scale=100.0, top=100.0)
COUNT = Unit("")
PER_SECOND = Unit("/s")
GIBIBYTES = Unit(" GiB", scale=1 / GIB)


# plotext names terminal colour 3 "orange" (and 11 "orange+") where Rich says "yellow"; a name plotext
# does not know is silently replaced by another colour, so a line would not match its title.
_PLOTEXT_NAMES = {"yellow": "orange", "bright_yellow": "orange+"}


def plotext_color(rich_name: str) -> str:
    """plotext's name for the terminal colour Rich calls ``rich_name``."""
    return _PLOTEXT_NAMES.get(rich_name, rich_name)


@dataclass(frozen=True, slots=True)
class Line:
    """One plotted series.

    Attributes:
        series: The name of the series in the poller's history (:data:`engine.telemetry.poller.SERIES_NAMES`).
        label: Its short name in the title.
        color: Its colour, a Rich name of one of the 16 terminal colours (``"green"``, ``"yellow"``...);
            the plot draws it in plotext's name for the same colour (:func:`plotext_color`).
    """

    series: str
    label: str
    color: str


@dataclass(frozen=True, slots=True)
class GraphSpec:
    """One dashboard graph: its lines, their unit, and what the title says beside the latest values.

    Attributes:
        id: The widget id suffix (``graph-<id>``).
        title: What the graph shows.
        short_title: The title where the graph is narrow.
        lines: The series plotted, all in ``unit``.
        unit: The unit of the y axis.
        extra: Optional text after the latest values, from this tick's values (e.g. KV capacity).
    """

    id: str
    title: str
    short_title: str
    lines: tuple[Line, ...]
    unit: Unit
    extra: Callable[[Values], str] | None = None

    def titles(self, latest: Values) -> list[str]:
        """The title in every length, longest first, for the graph to take the first that fits."""
        return [
            self.title_text(latest),
            self.title_text(latest, with_extra=False),
            self.title_text(latest, narrow=True),
            self.title_text(latest, narrow=True, with_extra=False),
            self.title_text(latest, narrow=True, with_extra=False, labels=False),
        ]

    def title_text(
        self, latest: Values, narrow: bool = False, with_extra: bool = True, labels: bool = True
    ) -> str:
        """The title with the latest value of each line (Rich markup, in the lines' colours), unit once.

        Args:
            latest: This tick's values by series name.
            narrow: Use the short title.
            with_extra: Add the extra text (KV capacity, preemption total).
            labels: Name each line (else only its colour tells it).
        """
        parts = []
        for line in self.lines:
            raw = latest.get(line.series)
            value = "-" if raw is None else compact_number(raw * self.unit.scale)
            if line.label and labels:
                parts.append(f"[{line.color}]{line.label}[/] {value}")
            elif len(self.lines) > 1:
                parts.append(f"[{line.color}]{value}[/]")
            else:
                parts.append(value)
        known = any(latest.get(line.series) is not None for line in self.lines)
        text = f"{self.short_title if narrow else self.title} " + " ".join(parts)
        text += self.unit.suffix if known else ""
        if self.extra is not None and with_extra:
            extra = self.extra(latest)
            if extra:
                text += f" · {extra}"
        return text


def _kv_capacity(latest: Values) -> str:
    usage, capacity = latest.get("kv_cache_usage"), latest.get("kv_cache_capacity_tokens")
    if capacity is None:
        return ""
    used = f"{compact_number(usage * capacity)}/" if usage is not None else ""
    return f"{used}{compact_number(capacity)} tok"


def _preemptions_total(latest: Values) -> str:
    total = latest.get("preemptions_total")
    return "" if total is None else f"{total:,.0f} total"


GRAPHS: tuple[GraphSpec, ...] = (
    GraphSpec(
        "throughput",
        "Throughput",
        "Tok/s",
        (
            Line("generation_tokens_per_s", "gen", "green"),
            Line("prompt_tokens_per_s", "prompt", "cyan"),
        ),
        TOKENS_PER_S,
    ),
    GraphSpec(
        "requests",
        "Requests",
        "Reqs",
        (Line("requests_running", "run", "green"), Line("requests_waiting", "wait", "yellow")),
        COUNT,
    ),
    GraphSpec("kv", "KV cache", "KV", (Line("kv_cache_usage", "", "magenta"),), PERCENT, extra=_kv_capacity),
    GraphSpec("prefix", "Prefix cache hits", "Prefix", (Line("prefix_cache_hit_rate", "", "cyan"),), PERCENT),
    GraphSpec(
        "ttft",
        "TTFT",
        "TTFT",
        (Line("ttft_p50_s", "p50", "green"), Line("ttft_p95_s", "p95", "red")),
        MILLISECONDS,
    ),
    GraphSpec(
        "itl",
        "ITL",
        "ITL",
        (Line("itl_p50_s", "p50", "green"), Line("itl_p95_s", "p95", "red")),
        MILLISECONDS,
    ),
    GraphSpec(
        "preempt",
        "Preemptions",
        "Preempt",
        (Line("preemptions_per_s", "", "red"),),
        PER_SECOND,
        extra=_preemptions_total,
    ),
)
"""Every graph of the dashboard, in the order they are laid out."""


GPU_MEMORY = GraphSpec(
    "memory", "GPU memory used", "GPU mem", (Line("gpu_memory_used_bytes", "", "yellow"),), GIBIBYTES
)
SERVER_MEMORY = GraphSpec(
    "memory", "Server memory", "Server mem", (Line("server_rss_bytes", "", "yellow"),), GIBIBYTES
)
HOST_MEMORY = GraphSpec(
    "memory", "Host RAM used", "Host RAM", (Line("host_memory_used_bytes", "", "yellow"),), GIBIBYTES
)
"""The eighth graph: the memory under the server (GPUs, else its process tree, else the host)."""
