"""Rich output of the ``quant-tui`` command: tables sized to their content, and a live status line on a terminal.

Off a terminal (a pipe, a file, a test) everything is plain text: no colour, no escape codes, no
wrapping, so scripts can read it; rich decides that from the stream, as it does for any console.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

# The width content is measured at off a terminal: wider than any line quant-tui prints.
UNBOUNDED_WIDTH = 10_000

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.table import Table


def console(stream: TextIO | None = None, width: int | None = None) -> Console:
    """A rich console on ``stream`` (stdout) that prints text as given: no markup, highlighting or emoji."""
    from rich.console import Console

    return Console(
        file=stream if stream is not None else sys.stdout,
        width=width,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=True,
    )


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], *, right_from: int = 1) -> Table:
    """A borderless table with a bold header; columns from ``right_from`` on are right-aligned (numbers)."""
    from rich.box import SIMPLE_HEAD
    from rich.table import Table

    grid = Table(box=SIMPLE_HEAD, header_style="bold", show_edge=False, pad_edge=False)
    for index, name in enumerate(columns):
        grid.add_column(name, justify="right" if index >= right_from else "left", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    return grid


def fields(rows: Iterable[tuple[str, str]]) -> Table:
    """Label/value lines with the values in one column (``KV cache:   …``); values never wrap."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def show(renderable: RenderableType, stream: TextIO | None = None) -> None:
    """Prints a table (or any renderable) on ``stream``: styled on a terminal, :func:`plain` text elsewhere."""
    out = console(stream)
    if out.is_terminal:
        out.print(renderable)
    else:
        out.file.write(plain(renderable) + "\n")
        out.file.flush()


def plain(renderable: RenderableType) -> str:
    """A table (or any renderable) as plain text: as wide as its content (never folded to 80 columns), no
    colour, no trailing spaces."""
    from rich.console import Console

    unbounded = console(io.StringIO(), width=UNBOUNDED_WIDTH)
    width = max(unbounded.measure(renderable).maximum, 1)
    out = Console(
        file=io.StringIO(), width=width, color_system=None, highlight=False, markup=False, emoji=False
    )
    with out.capture() as captured:
        out.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


class StatusLine:
    """One line on a terminal that keeps being rewritten (``starting vLLM: …``), with text printed above it.

    Off a terminal there is no status line: :meth:`update` does nothing and :meth:`print` prints.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        """Prepares the line on ``stream`` (stderr); it appears at the first :meth:`update`."""
        self.console = console(stream if stream is not None else sys.stderr)
        self.live_capable = self.console.is_terminal
        self._live: Live | None = None
        self._lock = threading.Lock()

    def update(self, text: str) -> None:
        """Shows ``text`` as the status, cut to the terminal's width."""
        if not self.live_capable:
            return
        from rich.text import Text

        line = Text(text, no_wrap=True, overflow="ellipsis")
        with self._lock:
            if self._live is None:
                from rich.live import Live

                self._live = Live(
                    line,
                    console=self.console,
                    auto_refresh=False,
                    transient=True,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
                self._live.start(refresh=True)
            else:
                self._live.update(line, refresh=True)

    def print(self, text: str) -> None:
        """Prints ``text`` as a line of its own, above the status line when one is shown."""
        with self._lock:
            self.console.print(text)

    def clear(self) -> None:
        """Removes the status line (until the next :meth:`update`)."""
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None
