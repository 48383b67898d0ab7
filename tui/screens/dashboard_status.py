"""The dashboard's words: what died and what to do, the load generator's state, and which local process serves a URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui.format import number

if TYPE_CHECKING:
    from engine.bench.load_result import LoadProgress, LoadResult
    from engine.serve.failure_diagnosis import Diagnosis

# The built-in load: a steady stream of streamed completions until stopped (or ten minutes).
LOAD_CONCURRENCY = 4
LOAD_PROMPT_TOKENS = 128
LOAD_OUTPUT_TOKENS = 128
LOAD_MAX_SECONDS = 600.0

LOAD_OFF = "load: off (l starts it)"
LOAD_STARTING = (
    f"load: starting ({LOAD_CONCURRENCY} at a time, {LOAD_PROMPT_TOKENS}+{LOAD_OUTPUT_TOKENS} tokens)"
)
LOAD_STOPPING = "load: stopping…"


def death_text(error: str | None, diagnosis: Diagnosis | None, started_here: bool) -> str:
    """What died, why (from the server's log, when quant-tui started it) and how to get it back."""
    lines = [error or "the vLLM engine process died"]
    if diagnosis is not None:
        lines.append(f"why: {diagnosis.cause}; fix: {diagnosis.fix}")
    lines.append(
        "r restarts it (the history stays)"
        if started_here
        else "restart it where it runs; the dashboard picks it up again (the history stays)"
    )
    return "\n".join(lines)


def load_running_text(progress: LoadProgress) -> str:
    """The load generator's count so far."""
    return (
        f"load: running, {progress.finished} requests done ({progress.failed} failed), "
        f"{progress.generated_tokens:,} tokens generated (l stops)"
    )


def load_done_text(result: LoadResult) -> str:
    """The sum of the load that ran: outcomes and throughput."""
    from engine.bench.metrics import Outcome

    cancelled = sum(1 for record in result.records if record.outcome == Outcome.CANCELLED)
    failed = sum(1 for record in result.records if record.outcome not in (Outcome.OK, Outcome.CANCELLED))
    return (
        f"load: off; last: {result.ok_requests} ok, {failed} failed, {cancelled} cut by stop, "
        f"{number(result.output_tokens_per_s)} tok/s (l restarts)"
    )


def local_server_pid(url: str) -> int | None:
    """The pid of a server on this machine at ``url`` (to watch its processes), when it can be seen."""
    import httpx

    from engine.telemetry.processes import listening_pid

    try:
        parsed = httpx.URL(url if "://" in url else f"http://{url}")
    except (httpx.InvalidURL, ValueError):
        return None
    if parsed.host not in ("localhost", "::1") and not parsed.host.startswith("127."):
        return None
    return listening_pid(parsed.port or (443 if parsed.scheme == "https" else 80))
