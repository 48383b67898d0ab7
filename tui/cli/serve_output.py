"""What ``quant-tui serve`` prints: the compact log or a live status line, the ready block, JSON and failures."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from typing import TYPE_CHECKING, TextIO

from engine.errors import QuantTuiError
from engine.serve.phases import PhaseLog
from engine.units import format_duration
from tui.cli.output import StatusLine, fields, show
from tui.startup_text import engine_phrases, kv_cache_phrase

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.plan.multi_node import ClusterStep
    from engine.plan.server_config import ServerConfig
    from engine.serve.launcher import ServerFailed, VllmServer
    from engine.serve.startup_facts import StartupFacts
    from engine.telemetry.poller import TelemetryPoller


class ServeConsole:
    """The server's log on stderr: one line per start-up phase (or every line), or a live status on a terminal."""

    def __init__(self, verbose: bool, stream: TextIO | None = None) -> None:
        """Writes on ``stream`` (stderr); ``verbose`` prints every log line instead of the phases."""
        self.verbose = verbose
        self.status_line = StatusLine(stream if stream is not None else sys.stderr)
        self.live = self.status_line.live_capable and not verbose
        self.phases = PhaseLog()

    def on_log(self, line: str) -> None:
        """Takes one server log line: printed when verbose, as a phase off a terminal, else in the status."""
        shown = self.phases.feed(line)
        if self.verbose:
            self.print(line)
        elif self.live:
            pass  # the status line shows the phase
        elif shown is not None:
            self.print(f"quant-tui: {shown}" if shown.startswith("vLLM:") else shown)

    @property
    def phase(self) -> str:
        """The start-up phase reached so far."""
        return self.phases.phase

    def print(self, text: str) -> None:
        """Prints a line of its own (above the status line on a terminal)."""
        self.status_line.print(text)

    def status(self, text: str) -> None:
        """Shows ``text`` as the live status (only on a terminal, and not when verbose)."""
        if self.live:
            self.status_line.update(text)

    def done(self) -> None:
        """Removes the status line."""
        self.status_line.clear()


def facts_rows(facts: StartupFacts) -> list[tuple[str, str]]:
    """What vLLM said at start-up, as label/value rows: the KV cache, then the engine's weights and kernel."""
    rows = []
    kv = kv_cache_phrase(facts)
    if kv is not None:
        rows.append(("KV cache:", kv))
    details = engine_phrases(facts)
    if details:
        rows.append(("engine:", ", ".join(details)))
    return rows


def status_text(server: VllmServer, served_since: float, poller: TelemetryPoller | None) -> str:
    """The live status while serving: URL, uptime and, with a poller, throughput, queue and KV cache use."""
    text = f"serving {server.url} · up {format_duration(time.monotonic() - served_since)}"
    if poller is None:
        return text + " · Ctrl-C to stop"
    metrics = poller.poll_once().metrics
    if metrics is not None:
        parts = []
        if metrics.generation_tokens_per_s is not None:
            parts.append(f"{metrics.generation_tokens_per_s:.1f} tok/s")
        if metrics.requests_running is not None:
            parts.append(f"running {metrics.requests_running:.0f}")
        if metrics.requests_waiting is not None:
            parts.append(f"waiting {metrics.requests_waiting:.0f}")
        if metrics.kv_cache_usage is not None:
            parts.append(f"KV {100 * metrics.kv_cache_usage:.1f}%")
        if parts:
            text += " · " + " · ".join(parts)
    return text + " · Ctrl-C to stop"


def print_failure(failure: ServerFailed) -> None:
    """The diagnosis of a server that did not start, and where its full log is, on stderr."""
    print(f"quant-tui: the vLLM server failed: {failure.diagnosis.cause}", file=sys.stderr)
    print(f"quant-tui: fix: {failure.diagnosis.fix}", file=sys.stderr)
    if failure.log_path is not None:
        print(f"quant-tui: full log: {failure.log_path}", file=sys.stderr)


def print_ready(server: VllmServer, facts: StartupFacts, seconds: float) -> None:
    """``vLLM is serving NAME at URL (ready in N s)``, then the start-up facts and how to try and watch it."""
    name = model_name(server)
    print(f"vLLM is serving {name} at {server.url} (ready in {seconds:.0f} s)", flush=True)
    rows = facts_rows(facts)
    if server.comparison is not None:
        from engine.serve.plan_check import comparison_lines

        for index, line in enumerate(comparison_lines(server.comparison)):
            rows.append(("plan vs. actual:" if index == 0 else "", line))
        if server.calibration_note:
            rows.append(("recorded:", server.calibration_note))
    body = json.dumps({"model": name, "prompt": "Hello", "max_tokens": 16})
    auth = " -H 'Authorization: Bearer $VLLM_API_KEY'" if server.config.api_key else ""
    rows.append(
        (
            "try:",
            f"curl {server.url}/v1/completions -H 'Content-Type: application/json'{auth} -d {shlex.quote(body)}",
        )
    )
    key = " --api-key $VLLM_API_KEY" if server.config.api_key else ""
    rows.append(("watch:", f"quant-tui monitor {server.url}{key}"))
    from rich.padding import Padding

    show(Padding(fields(rows), (0, 0, 0, 2)))
    sys.stdout.flush()


def print_json(server: VllmServer, facts: StartupFacts, seconds: float) -> None:
    """One JSON line: URL, pid, the command, the start-up facts and plan vs. actual."""
    line = {
        "url": server.url,
        "pid": server.pid,
        "ready_seconds": round(seconds, 1),
        "command": server.config.command_line(server.backend),
        "facts": dataclasses.asdict(facts),
        "plan_vs_actual": server.comparison.to_json() if server.comparison else None,
    }
    print(json.dumps(line), flush=True)


def model_name(server: VllmServer) -> str:
    """The name clients use: ``--served-model-name``, else what the server lists, else the folder."""
    if server.config.served_model_name:
        return server.config.served_model_name
    from engine.serve.client import served_model_name

    try:
        return served_model_name(server.url, server.config.api_key)
    except QuantTuiError:
        return str(server.config.model)


def print_attach(server: VllmServer) -> None:
    """How to watch and stop a server left running (``--keep-running``)."""
    print(f"  the server keeps running (pid {server.pid}); attach with: quant-tui monitor {server.url}")
    print(f"  stop it with: kill -INT -- -{server.pid}")
    sys.stdout.flush()


def print_cluster_steps(boxes: int, steps: Sequence[ClusterStep]) -> None:
    """The Ray cluster's start-up, one ``[where] command`` line each, on stdout (as ``recommend`` shows it)."""
    print(f"{boxes} boxes joined by Ray, as vLLM's multi-node guide starts them:", flush=True)
    for step in steps:
        print(f"  [{step.where}] {step.command}", flush=True)


def dry_run_json(config: ServerConfig, steps: Sequence[ClusterStep] = ()) -> dict[str, object]:
    """The plan ``serve`` would start, in ``recommend --json``'s words: ``vllm_args``, ``env``, ``command``, ``cluster_steps``."""
    from engine.serve.backend import detect_backend
    from engine.serve.server_command import default_cpu_kvcache_gib

    backend = config.backend or detect_backend()
    if backend == "cpu" and config.cpu_kvcache_gib is None:
        # No plan sized it: the launcher applies the one CPU rule, so the dry run shows that size.
        config = dataclasses.replace(config, cpu_kvcache_gib=default_cpu_kvcache_gib(config))
    prediction = config.prediction
    return {
        "model_dir": str(config.model),
        "method": config.method,
        "backend": backend,
        "vllm_args": config.vllm_args(backend),
        "env": config.environment(backend),
        "command": config.command_line(backend),
        "prediction": dataclasses.asdict(prediction) if prediction is not None else None,
        "cluster_steps": [{"where": step.where, "command": step.command} for step in steps],
    }


def print_dry_run(config: ServerConfig, as_json: bool, steps: Sequence[ClusterStep] = ()) -> int:
    """``serve --dry-run``: the command and environment the plan starts (or one JSON object); returns 0.

    A plan spanning boxes prints its Ray steps instead of the command alone (the command is the last).
    """
    plan = dry_run_json(config, steps)
    if as_json:
        print(json.dumps(plan), flush=True)
    elif steps:
        print_cluster_steps(config.pipeline_parallel_size, steps)
    else:
        print(plan["command"], flush=True)
    print(
        "quant-tui: dry run: nothing started; serving runs this command with quant-tui's Python, on a free "
        "port unless --port, offline (HF_HUB_OFFLINE=1, VLLM_NO_USAGE_STATS=1), the API key in $VLLM_API_KEY",
        file=sys.stderr,
    )
    return 0
