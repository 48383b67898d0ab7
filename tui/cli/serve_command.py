"""The ``quant-tui serve`` subcommand: runs a vLLM server for a model in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from engine.errors import QuantTuiError
from tui.cli.api_key_options import add_api_key_options, api_key
from tui.cli.plan_options import add_model_option, add_plan_options, plan_request
from tui.cli.serve_output import (
    ServeConsole,
    print_attach,
    print_cluster_steps,
    print_dry_run,
    print_failure,
    print_json,
    print_ready,
    status_text,
)

if TYPE_CHECKING:
    from pathlib import Path

    from engine.plan.multi_node import ClusterStep
    from engine.plan.plan_request import PlanRequest
    from engine.plan.server_config import ServerConfig
    from engine.serve.launcher import VllmServer


def register(subparsers: Any) -> None:
    """Adds the ``serve`` parser."""
    parser = subparsers.add_parser(
        "serve",
        help="serve a model with vLLM in the foreground (Ctrl-C stops it)",
        description=(
            "Start a local vLLM server for a model folder (or 'demo'), wait until it is healthy, print "
            "its URL and keep it running until Ctrl-C or SIGTERM. It binds 127.0.0.1 on a free port "
            "unless told otherwise; anything after -- goes to vLLM unchanged. The planning options are "
            "recommend's: it starts the command `quant-tui recommend` prints for the same options "
            "(--dry-run prints it and exits)."
        ),
    )
    add_model_option(parser, required=True)
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: a free one)")
    parser.add_argument(
        "--host",
        default=None,
        help="address to bind (default 127.0.0.1); any other address needs an API key (--api-key-file)",
    )
    add_api_key_options(parser, "clients must send this key")
    parser.add_argument("--served-model-name", default=None, help="the name clients use for the model")
    # The planning options are recommend's own: serve re-plans from them, so it starts what recommend prints.
    add_plan_options(parser)
    parser.add_argument(
        "--quantization", default=None, help="vLLM --quantization (default: the checkpoint's)"
    )
    parser.add_argument(
        "--distributed-executor-backend",
        default=None,
        metavar="{mp,ray}",
        help="vLLM's executor for several GPUs (default: the plan's, ray when --nodes spans boxes); "
        "ray on one box joins or starts a Ray instance here",
    )
    parser.add_argument(
        "--ray",
        action="store_const",
        const="ray",
        dest="distributed_executor_backend",
        help="the same as --distributed-executor-backend ray",
    )
    parser.add_argument(
        "--enforce-eager", action="store_true", help="skip compilation and graph capture (starts faster)"
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for the server to be healthy (900)"
    )
    parser.add_argument("--log-file", default=None, help="where to keep the full server log")
    parser.add_argument("--verbose", action="store_true", help="print every server log line")
    parser.add_argument(
        "--json",
        action="store_true",
        help="once ready, also print one JSON line: URL, plan, start-up facts and plan vs. actual",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the command and environment the plan would start (with --json: as JSON) and exit",
    )
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the server running after this command exits and print how to attach",
    )
    parser.add_argument(
        "vllm_args", nargs=argparse.REMAINDER, metavar="-- VLLM_ARGS", help="extra flags for vLLM, after --"
    )
    parser.set_defaults(func=run)


def _extra_args(values: list[str]) -> tuple[str, ...]:
    if values and values[0] == "--":
        values = values[1:]
    elif values:
        raise QuantTuiError(f"unexpected argument {values[0]!r}; put extra vLLM flags after --")
    return tuple(values)


def _stop_on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGTERM and SIGHUP end the foreground wait like Ctrl-C does; returns the handlers they replace."""

    def handler(signum: int, frame: object) -> None:
        stop.set()

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGHUP)}


def run(args: argparse.Namespace) -> int:
    """Serves until Ctrl-C/SIGTERM; 0 after a clean stop, 1 when the server fails (with the diagnosis)."""
    extra = _extra_args(args.vllm_args)
    console = ServeConsole(args.verbose)
    try:
        return _plan_and_serve(args, extra, console)
    finally:
        console.done()  # whatever ends the run, the terminal gets its cursor and a clean line back


def _plan_and_serve(args: argparse.Namespace, extra: tuple[str, ...], console: ServeConsole) -> int:
    from engine.model.reference import resolve_model
    from engine.serve.backend import detect_backend

    request = plan_request(args)  # bad values are refused before anything is built or started
    model = resolve_model(
        args.model, on_demo_progress=lambda p: console.status(f"building the demo model: {p.message}")
    )
    console.done()
    config, no_plan = server_config(args, model, request, extra)
    if no_plan:
        console.print(no_plan)
    steps = cluster_steps(config)
    if args.dry_run:
        return print_dry_run(config, args.json, steps)
    if steps:
        _check_ray_cluster(config, steps, console)
    backend = detect_backend()
    stop = threading.Event()
    previous = _stop_on_signals(stop)
    try:
        return _serve(args, config, backend, console, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def server_config(
    args: argparse.Namespace, model: Path, request: PlanRequest, extra: tuple[str, ...] = ()
) -> tuple[ServerConfig, str | None]:
    """The server ``serve`` starts: the plan ``recommend`` shows for the checkpoint, from the same options.

    Returns:
        The config, and a line saying why there is no plan when the checkpoint cannot be planned
        (then vLLM is started as asked and its log says what is wrong).
    """
    from dataclasses import replace

    from engine.errors import ModelError
    from engine.plan.recommender import plan_checkpoint
    from engine.plan.server_config import ServerConfig

    no_plan = None
    try:
        plan = plan_checkpoint(model, request).server
    except ModelError as error:  # the checkpoint cannot be planned; a bad request is refused (exit 2)
        no_plan = f"quant-tui: no plan for {model}: {error}"
        plan = ServerConfig(
            model=model,
            dtype=request.dtype,
            max_model_len=request.max_model_len,
            kv_cache_dtype=request.kv_cache_dtype or "auto",
            tensor_parallel_size=request.tensor_parallel_size or 1,
            pipeline_parallel_size=request.stages,
            distributed_executor_backend="ray" if request.nodes > 1 else None,
            cpu_kvcache_gib=request.cpu_kvcache_gib,
            gpu_memory_utilization=request.gpu_memory_utilization,
            max_num_seqs=request.max_num_seqs,
            max_num_batched_tokens=request.max_num_batched_tokens,
            layer_partition=request.layer_partition,
        )
    executor = args.distributed_executor_backend or plan.distributed_executor_backend
    if executor not in (None, "mp", "ray"):
        raise QuantTuiError(f"unknown --distributed-executor-backend {executor!r}; use mp or ray")
    if plan.distributed_executor_backend == "ray" and executor != "ray":  # the plan spans boxes
        raise QuantTuiError(
            f"a plan across {plan.pipeline_parallel_size} boxes runs on Ray, as vLLM's multi-node guide sets it "
            f"up, not on {executor}",
            "drop --distributed-executor-backend, or drop --nodes to serve on this box",
        )
    config = replace(
        plan,
        served_model_name=args.served_model_name,
        host=args.host if args.host is not None else "127.0.0.1",
        port=args.port,
        quantization=args.quantization or plan.quantization,
        enforce_eager=plan.enforce_eager or args.enforce_eager,
        api_key=api_key(args),
        extra_args=extra,
        allow_remote=args.host is not None,  # naming the address is the explicit opt-in
        distributed_executor_backend=executor,
    )
    return config, no_plan


def cluster_steps(config: ServerConfig) -> tuple[ClusterStep, ...]:
    """The Ray commands that start a plan spanning boxes, its ``vllm serve`` line last; () on one box."""
    from engine.plan.multi_node import ray_cluster_steps

    if config.pipeline_parallel_size < 2 or config.distributed_executor_backend != "ray":
        return ()  # stages on one box need no cluster
    return ray_cluster_steps(config.pipeline_parallel_size, config.command_line())


def _check_ray_cluster(config: ServerConfig, steps: tuple[ClusterStep, ...], console: ServeConsole) -> None:
    """Starts a plan spanning boxes here only where vLLM joins a Ray cluster; else prints the steps and refuses.

    Raises:
        QuantTuiError: no Ray cluster is reachable from here (the steps are on stdout above it).
    """
    from engine.plan.multi_node import require_ray_cluster

    boxes = config.pipeline_parallel_size
    try:
        require_ray_cluster(
            boxes,
            "run the commands above, each on the node it names, the last one (vllm serve) on the head node",
        )
    except QuantTuiError:
        print_cluster_steps(boxes, steps)
        raise
    console.print(
        f"quant-tui: a Ray cluster is reachable here: vLLM joins it and checks it holds "
        f"{boxes} × {config.tensor_parallel_size} GPUs"
    )


def _serve(
    args: argparse.Namespace, config: ServerConfig, backend: str, console: ServeConsole, stop: threading.Event
) -> int:
    from pathlib import Path

    from engine.serve.launcher import ServerFailed, VllmServer

    model = config.model
    server = VllmServer(
        config,
        log_path=Path(args.log_file) if args.log_file else None,
        on_log=console.on_log,
        keep_running=args.keep_running,
    )
    started = time.monotonic()
    try:
        server.start()
        console.print(
            f"quant-tui: starting vLLM ({'GPU' if backend == 'cuda' else 'CPU'} build) for {model}\n"
            f"quant-tui: plan: {config.command_line(server.backend)}  (as `quant-tui recommend` shows it)\n"
            f"quant-tui: log: {server.log_path}"
        )
        waiter = threading.Thread(target=_show_progress, args=(console, server, started, stop), daemon=True)
        waiter.start()
        facts = server.wait_healthy(timeout=args.timeout, cancel=stop)
        waiter.join(2)
    except ServerFailed as failure:
        console.done()
        if stop.is_set():
            print("quant-tui: stopped before the server was ready", file=sys.stderr)
            return 130
        print_failure(failure)
        return 1
    except KeyboardInterrupt:
        console.done()
        server.stop()
        print("quant-tui: stopped before the server was ready", file=sys.stderr)
        return 130
    console.done()
    print_ready(server, facts, time.monotonic() - started)
    if args.json:
        print_json(server, facts, time.monotonic() - started)
    if args.keep_running:
        print_attach(server)
        return 0
    return _serve_until_stopped(server, console, stop)


def _show_progress(console: ServeConsole, server: VllmServer, started: float, stop: threading.Event) -> None:
    while server.facts is None and not stop.is_set() and server.is_running():
        console.status(f"starting vLLM: {console.phase} ({time.monotonic() - started:.0f} s)")
        stop.wait(0.25)


def _serve_until_stopped(server: VllmServer, console: ServeConsole, stop: threading.Event) -> int:
    from engine.telemetry.poller import TelemetryPoller

    poller: TelemetryPoller | None = None
    if console.live:
        poller = TelemetryPoller(
            server.url, interval_s=1.0, api_key=server.config.api_key, sample_hardware=False
        )
    print("Press Ctrl-C to stop.", flush=True)
    served_since = time.monotonic()
    try:
        while not stop.is_set():
            if not server.is_running():
                console.done()
                from engine.serve.failure_diagnosis import diagnose_failure

                diagnosis = diagnose_failure(server.read_log(), server.returncode)
                cause = diagnosis.cause if diagnosis else f"it exited with status {server.returncode}"
                print(f"quant-tui: the vLLM server stopped on its own: {cause}", file=sys.stderr)
                if diagnosis:
                    print(f"quant-tui: fix: {diagnosis.fix}", file=sys.stderr)
                print(f"quant-tui: full log: {server.log_path}", file=sys.stderr)
                server.stop()
                return 1
            console.status(status_text(server, served_since, poller))
            stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        if poller is not None:
            poller.close()
    console.done()
    print("quant-tui: stopping the server…", file=sys.stderr, flush=True)
    server.stop()
    print("quant-tui: stopped", file=sys.stderr)
    return 0
