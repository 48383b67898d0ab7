"""The ``quant-tui monitor`` subcommand: live telemetry of any running vLLM server, as text or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from engine.errors import QuantTuiError
from engine.units import format_bytes, format_milliseconds
from tui.cli.api_key_options import add_api_key_options, api_key
from tui.format import number

if TYPE_CHECKING:
    from engine.telemetry.poller import TelemetryPoller
    from engine.telemetry.snapshot import TelemetrySnapshot

# Consecutive failed polls after a good one before the monitor gives up on the server.
LOST_AFTER_FAILURES = 5


def register(subparsers: Any) -> None:
    """Adds the ``monitor`` parser."""
    parser = subparsers.add_parser(
        "monitor",
        help="watch a running vLLM server's throughput, queue, KV cache and latency",
        description=(
            "Attach to a running vLLM server (local, or through an SSH tunnel) and show its live "
            "telemetry from /metrics, plus this machine's GPUs and CPU. Nothing is launched."
        ),
    )
    parser.add_argument("url", metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000")
    add_api_key_options(parser, "the server's API key, sent as a Bearer token")
    parser.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between polls (1)")
    parser.add_argument("--json", action="store_true", help="print each snapshot as one JSON line")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="exit after N snapshots")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="one text line per snapshot instead of the dashboard on a terminal",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        metavar="PID",
        help="also sample this server process tree's memory",
    )
    parser.add_argument(
        "--export", default=None, metavar="FILE", help="on exit, save the history as FILE (.csv or .json)"
    )
    parser.set_defaults(func=run)


def snapshot_record(snapshot: TelemetrySnapshot) -> dict[str, Any]:
    """The flat JSON object printed for one snapshot: derived figures at the top level."""
    record: dict[str, Any] = {
        "time": round(snapshot.wall_time, 3),
        "url": snapshot.url,
        "error": snapshot.error,
    }
    if snapshot.metrics is not None:
        figures = snapshot.metrics.to_dict()
        record.update(figures)
    record["server_rss_bytes"] = snapshot.server_rss_bytes
    record["gpus"] = snapshot.to_dict()["gpus"]
    host = snapshot.host
    if host is not None:
        record["host"] = {
            "cpu_percent": host.cpu_percent,
            "memory_total_bytes": host.memory_total_bytes,
            "memory_available_bytes": host.memory_available_bytes,
        }
    return record


def plain_line(snapshot: TelemetrySnapshot) -> str:
    """One compact text line for one snapshot."""
    stamp = time.strftime("%H:%M:%S", time.localtime(snapshot.wall_time))
    metrics = snapshot.metrics
    if metrics is None:
        return f"{stamp}  no data: {snapshot.error}"
    kv = metrics.kv_cache_usage
    parts = [
        stamp,
        f"gen {number(metrics.generation_tokens_per_s)} tok/s",
        f"prompt {number(metrics.prompt_tokens_per_s)} tok/s",
        f"running {number(metrics.requests_running, 0)}",
        f"waiting {number(metrics.requests_waiting, 0)}",
        f"kv {number(None if kv is None else 100 * kv, 1, '%')}",
        f"ttft p50 {format_milliseconds(metrics.ttft_p50_s)}",
        f"itl p50 {format_milliseconds(metrics.itl_p50_s)}",
        f"tokens {number(metrics.generation_tokens_total, 0)}",
    ]
    if snapshot.server_rss_bytes is not None:
        parts.append(f"server {format_bytes(snapshot.server_rss_bytes)}")
    return "  ".join(parts)


class _Monitor:
    """Prints snapshots and decides when the server is lost."""

    def __init__(self, args: argparse.Namespace, poller: TelemetryPoller) -> None:
        self.args = args
        self.poller = poller
        self.shown = 0
        self.failures_in_row = 0
        self.stop = threading.Event()
        self.fatal: str | None = None

    def on_snapshot(self, snapshot: TelemetrySnapshot) -> None:
        if snapshot.ok:
            self.failures_in_row = 0
        else:
            self.failures_in_row += 1
        if self.args.json:
            print(json.dumps(snapshot_record(snapshot)), flush=True)
        else:
            print(plain_line(snapshot), flush=True)
        self.shown += 1
        if snapshot.server_alive is False:
            self.fatal = f"the server process (pid {self.poller.server_pid}) has exited"
        elif self.failures_in_row >= LOST_AFTER_FAILURES:
            self.fatal = f"lost the server after {self.failures_in_row} failed polls: {snapshot.error}"
        if self.fatal is not None or (self.args.count is not None and self.shown >= self.args.count):
            self.stop.set()


def _first_snapshot(poller: TelemetryPoller, once: bool) -> TelemetrySnapshot:
    """The first good snapshot, or a fatal error; with ``--once`` two polls so rates are real."""
    snapshot = poller.poll_once()
    if not snapshot.ok:
        raise QuantTuiError(snapshot.error or "the first poll failed")
    if once:
        time.sleep(poller.interval_s)
        snapshot = poller.poll_once()
        if not snapshot.ok:
            raise QuantTuiError(snapshot.error or "the second poll failed")
    return snapshot


def _wants_dashboard(args: argparse.Namespace) -> bool:
    """The Textual dashboard on a terminal, unless a text-only option was asked for."""
    text_only = args.json or args.plain or args.once or args.count or args.export or args.server_pid
    return not text_only and sys.stdin.isatty() and sys.stdout.isatty()


def run(args: argparse.Namespace) -> int:
    """Polls the server until Ctrl-C, ``--count`` or ``--once``; 2 when the server cannot be read.

    On a terminal (and without text-only options) the live dashboard opens after a first good poll;
    otherwise one text line or JSON object per snapshot is printed.
    """
    from engine.telemetry.poller import TelemetryPoller

    args.api_key = api_key(args)
    if args.count is not None and args.count < 1:
        raise QuantTuiError(f"--count must be at least 1, not {args.count}")
    if args.export is not None and not args.export.lower().endswith((".csv", ".json")):
        raise QuantTuiError(f"--export takes a .csv or .json file name, not {args.export!r}")
    poller = TelemetryPoller(
        args.url, interval_s=args.interval, api_key=args.api_key, server_pid=args.server_pid
    )
    try:
        first = _first_snapshot(poller, args.once)
        if args.once:
            print(json.dumps(snapshot_record(first)) if args.json else plain_line(first))
            return 0
        if _wants_dashboard(args):
            poller.close()
            from tui.app import create_monitor_app

            create_monitor_app(args.url, api_key=args.api_key, interval=args.interval).run()
            return 0
        return _poll_until_stopped(args, poller, first)
    except KeyboardInterrupt:
        return 0
    finally:
        # Nothing read from the server (it could not be reached): no export file, only the error.
        polled = any(snapshot.ok for snapshot in poller.snapshots())
        if polled and args.export and args.export.lower().endswith(".json"):
            poller.export_json(args.export)
        elif polled and args.export:
            poller.export_csv(args.export)
        poller.close()


def _poll_until_stopped(args: argparse.Namespace, poller: TelemetryPoller, first: TelemetrySnapshot) -> int:
    """Prints the first snapshot, then polls until stopped; a lost server is fatal."""
    monitor = _Monitor(args, poller)
    monitor.on_snapshot(first)
    if not monitor.stop.is_set():
        time.sleep(max(0.0, first.taken_at + poller.interval_s - time.monotonic()))
        poller.run(monitor.on_snapshot, monitor.stop)
    if monitor.fatal is not None:
        raise QuantTuiError(monitor.fatal)
    return 0
