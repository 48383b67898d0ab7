"""The real `quant-tui monitor` dashboard under tracemalloc: which lines and object types grow between two moments.

The soak (``benchmarks/soak_dashboard.py --tracemalloc``) starts this in its terminal instead of
``quant-tui monitor``. A thread takes a tracemalloc snapshot and an object census at ``--baseline-s``
(after the history is full) and again at ``--end-s``, then writes the largest growths to ``--out``.

Usage:
    python benchmarks/traced_dashboard.py URL --interval 0.25 --baseline-s 180 --end-s 420 --out FILE
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOP = 15
FRAMES = 8


def census() -> collections.Counter[str]:
    """How many live objects of each type the garbage collector tracks."""
    return collections.Counter(type(item).__qualname__ for item in gc.get_objects())


def report(
    first: tracemalloc.Snapshot,
    last: tracemalloc.Snapshot,
    counts: tuple[collections.Counter[str], collections.Counter[str]],
    seconds: float,
) -> str:
    """The top growth sites (by line and by call stack) and object types between two moments."""
    keep = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ]
    first, last = first.filter_traces(keep), last.filter_traces(keep)
    lines = [f"tracemalloc: growth over {seconds:.0f} s after the baseline"]
    total = sum(stat.size_diff for stat in last.compare_to(first, "filename"))
    lines.append(f"traced memory growth: {total / 2**20:+.2f} MiB")
    lines.append(f"top {TOP} growing lines:")
    for stat in last.compare_to(first, "lineno")[:TOP]:
        frame = stat.traceback[0]
        lines.append(
            f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  {frame.filename}:{frame.lineno}"
        )
    lines.append("top 3 growing call stacks (innermost last):")
    for stat in last.compare_to(first, "traceback")[:3]:
        lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks")
        for frame in stat.traceback.format()[-2 * FRAMES :]:
            if frame.strip().startswith("File"):
                lines.append(f"      {frame.strip()}")
    before, after = counts
    growth = collections.Counter(
        {name: after[name] - before[name] for name in after if after[name] > before[name]}
    )
    lines.append(
        "top object types by count growth: " + ", ".join(f"{n} +{c}" for n, c in growth.most_common(TOP))
    )
    return "\n".join(lines) + "\n"


def _watch(baseline_s: float, end_s: float, out: Path) -> None:
    started = time.monotonic()
    time.sleep(baseline_s)
    gc.collect()
    first, first_counts = tracemalloc.take_snapshot(), census()
    time.sleep(max(0.0, end_s - (time.monotonic() - started)))
    gc.collect()
    last, last_counts = tracemalloc.take_snapshot(), census()
    text = report(first, last, (first_counts, last_counts), end_s - baseline_s)
    temporary = out.with_name(out.name + ".part")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--baseline-s", type=float, required=True, help="first snapshot, s after start")
    parser.add_argument("--end-s", type=float, required=True, help="second snapshot, s after start")
    parser.add_argument("--out", type=Path, required=True, help="where the report goes")
    args = parser.parse_args()
    tracemalloc.start(FRAMES)
    threading.Thread(target=_watch, args=(args.baseline_s, args.end_s, args.out), daemon=True).start()
    from tui.cli import main as quant_tui

    return quant_tui(["monitor", args.url, "--interval", f"{args.interval:g}"])


if __name__ == "__main__":
    sys.exit(main())
