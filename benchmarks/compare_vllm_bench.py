"""`vllm bench serve` against `quant-tui bench --url` on one demo server with the same load: the ratios of their figures.

Usage: ``flock /tmp/quant-tui-heavy.lock .venv/bin/python benchmarks/compare_vllm_bench.py [--model demo]
[--rounds 3] [--max-rounds 5] [--num-prompts 64] [--input-len 64] [--output-len 64] [--concurrency 4]
[--settle-s 3] [--calm-wait-s 10] [--server-cpus 0] [--client-cpus 1] [--no-pin]
[--vllm-prompts same|random] [--compiled]``.

One server is started through quant-tui's launcher, pinned: it and every process it starts (API server,
engine core, worker, whose OpenMP threads VLLM_CPU_OMP_THREADS_BIND binds to the same CPUs) run on all
CPUs but the last, and this script and both clients on the last one. Unpinned, on a small box, the
engine's busy-polling processes and the client share the CPUs, and whichever client the scheduler
starves looks slower: the comparison then measures the machine. Each round runs vLLM's own benchmark
(the ``vllm.benchmarks.serve`` module in a subprocess: the ``vllm`` console script is broken in the CPU
wheel) and ``quant-tui bench --url`` (also a subprocess), with the same load, ``ignore_eos`` and no
temperature; the server's own ``/metrics`` window is read around each run as the referee (the client's
mean TTFT minus the server's own mean TTFT is the time the client itself adds). The server is warmed
up once before the first round (its first requests after start-up are slow for everyone; one pass of the
prompts leaves its prefix cache as every run finds it), every run starts after the same settle pause
(and then waits, up to ``--calm-wait-s``, for a second in which other processes leave the CPUs alone),
and rounds alternate which tool goes first (A B, B A, A B, ...). Both tools send the same prompts by
default: quant-tui's, cut to exactly ``--input-len`` tokens by the server's tokenizer, are written to a
JSONL file that vLLM's custom dataset sends in order (``--vllm-prompts random`` gives vLLM its random
dataset instead). A round is left out of the ratios when either run was disturbed: its client read its
streams in bunches (its median ITL under half the server's mean ITL: it was starved of CPU), or other
processes (or the hypervisor's steal) took more than 0.1 cores over its timed run; rounds go on until
``--rounds`` calm ones (at most ``--max-rounds``). The ratios are taken within each calm round and their
median is reported, plain and server-referenced: the second takes out how much faster the server itself
ran (its own mean ITL and TTFT over each run) during one run than during the other, which on a shared box
drifts by more than 10 % from run to run. Agreement (exit 0): output tok/s, median TTFT and median TPOT
server-referenced within 10 %, on enough calm rounds; the plain verdict is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.box_cpu import (
    BUSY_CORES,
    CpuSnapshot,
    CpuUse,
    cpu_list,
    move_this_process,
    omp_bind,
    server_affinity,
    split_cpus,
    tree_cpus,
    wait_for_calm,
)
from benchmarks.vllm_bench_ratios import FIGURES, report
from engine.bench.server_truth import ServerSampler, ServerWindow
from engine.errors import QuantTuiError
from engine.model.reference import resolve_model
from engine.serve.launcher import ServerConfig, VllmServer

_VLLM_SNIPPET = """
import json, sys
from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser()
add_cli_args(parser)
main(parser.parse_args(sys.argv[1:]))
"""


def write_prompts(prompts: list[str], path: Path) -> None:
    """Writes prompts as vLLM's custom dataset reads them: one ``{"prompt": ...}`` JSON object a line."""
    path.write_text("".join(json.dumps({"prompt": prompt}) + "\n" for prompt in prompts))


def run_client(argv: list[str], out: Path) -> dict[str, Any]:
    """Runs one client to the end; its saved result. Its output is shown only when it fails."""
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        done.check_returncode()
    return dict(json.loads(out.read_text()))


def vllm_bench(
    url: str, model: str, tokenizer: Path, args: argparse.Namespace, out: Path, prompts: Path | None
) -> dict[str, Any]:
    """Runs vLLM's own `vllm bench serve` in a subprocess; its saved result.

    With ``prompts`` it sends that JSONL file's prompts in order (its custom dataset, no chat template),
    else its random dataset.
    """
    argv = [sys.executable, "-c", _VLLM_SNIPPET, "--base-url", url, "--model", str(tokenizer)]
    argv += ["--served-model-name", model]
    if prompts is None:
        argv += ["--dataset-name", "random"]
        argv += ["--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len)]
    else:
        argv += ["--dataset-name", "custom", "--dataset-path", str(prompts), "--disable-shuffle"]
        argv += ["--custom-output-len", str(args.output_len), "--skip-chat-template"]
    argv += ["--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency)]
    argv += ["--ignore-eos", "--num-warmups", str(args.num_warmups), "--seed", "0", "--disable-tqdm"]
    argv += ["--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,95,99"]
    argv += ["--save-result", "--result-dir", str(out.parent), "--result-filename", out.name]
    # Its stderr (the CPU wheel's Triton and nanobind noise at exit) is shown only when it fails.
    return run_client(argv, out)


def quant_tui_bench(url: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Runs `quant-tui bench --url` in a subprocess; its saved result."""
    argv = [sys.executable, "-m", "tui.cli", "bench", "--url", url]
    argv += ["--input-len", str(args.input_len), "--output-len", str(args.output_len)]
    argv += ["--num-prompts", str(args.num_prompts), "--concurrency", str(args.concurrency)]
    argv += ["--num-warmups", str(args.num_warmups), "--save-result", str(out)]
    if args.server_sample_interval is not None:
        argv += ["--server-sample-interval", str(args.server_sample_interval)]
    return run_client(argv, out)


def _server_line(window: ServerWindow | None, data: dict[str, Any]) -> str:
    if window is None or window.request_success is None:
        return "server: not read"
    ttft = window.ttft.mean_ms if window.ttft else None
    itl = window.itl.mean_ms if window.itl else None
    added = "-" if ttft is None else f"{data['mean_ttft_ms'] - ttft:.1f} ms"
    return (
        f"server: {window.request_success:.0f} requests, {window.generation_tokens or 0:.0f} tokens, "
        f"mean TTFT {ttft or 0:.1f} ms, mean ITL {itl or 0:.2f} ms; client mean TTFT - server's: {added}"
    )


# A client whose median gap between chunks is under this share of the server's own mean ITL read its
# streams in bunches (starved of CPU by something else on the machine): that run measures the machine.
STARVED_ITL_SHARE = 0.5


def starved(window: ServerWindow | None, data: dict[str, Any]) -> bool:
    """Whether the client read its streams in bunches: its median ITL far below the server's mean ITL."""
    if window is None or window.itl is None or not window.itl.mean_ms:
        return False
    return float(data["median_itl_ms"]) < STARVED_ITL_SHARE * window.itl.mean_ms


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rounds", type=int, default=3, help="calm rounds to take the medians over")
    parser.add_argument(
        "--max-rounds", type=int, default=5, help="rounds in all, while busy or starved ones are replaced"
    )
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--num-warmups", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=3.0, help="idle seconds before every run")
    parser.add_argument(
        "--calm-wait-s",
        type=float,
        default=10.0,
        help="after the settle pause, wait up to this long for other processes to leave the CPUs",
    )
    parser.add_argument("--server-cpus", default=None, help="the server's CPUs (default: all but the last)")
    parser.add_argument("--client-cpus", default=None, help="the clients' CPUs (default: the last one)")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the server and the clients share every CPU"
    )
    parser.add_argument(
        "--server-sample-interval",
        type=float,
        default=None,
        help="quant-tui's /metrics scrape interval during its run (default: its own default)",
    )
    parser.add_argument(
        "--vllm-prompts",
        choices=("same", "random"),
        default="same",
        help="same: vLLM sends quant-tui's exact prompts (its custom dataset); random: its random dataset",
    )
    parser.add_argument(
        "--compiled", action="store_true", help="serve without --enforce-eager (slower start-up on CPU)"
    )
    args = parser.parse_args()
    args.max_rounds = max(args.max_rounds, args.rounds)
    return args


def start_server(server: VllmServer, cpus: tuple[frozenset[int], frozenset[int]] | None) -> None:
    """Starts the server on the server's CPUs and moves this script (and so the clients) onto the others."""
    if cpus is None:
        server.start()
        server.wait_healthy(timeout=600)
        print("cpus: not pinned (server and clients share every CPU)")
        return
    server_cpus, client_cpus = cpus
    with server_affinity(server_cpus):
        server.start()
    move_this_process(client_cpus)
    server.wait_healthy(timeout=600)
    processes, threads, used = tree_cpus(server.pid or 0)
    print(
        f"cpus: server ({processes} processes, {threads} threads) on {cpu_list(used)}, "
        f"VLLM_CPU_OMP_THREADS_BIND={omp_bind(server_cpus)}; clients on {cpu_list(client_cpus)}"
    )
    if not used <= server_cpus:
        print(
            f"cpus: WARNING: the server's threads may run on {cpu_list(used)}, not only {cpu_list(server_cpus)}"
        )


def one_run(
    tool: str,
    server: VllmServer,
    name: str,
    model_dir: Path,
    args: argparse.Namespace,
    out: Path,
    prompts_file: Path | None,
) -> dict[str, Any]:
    """One tool's run after the settle pause, with the server's window and who used the CPU meanwhile."""
    waited = wait_for_calm(server.pid, args.settle_s, args.calm_wait_s)
    with ServerSampler(server.url, interval_s=0) as sampler:
        before = CpuSnapshot.take(server.pid)
        if tool.startswith("vllm"):
            data = vllm_bench(server.url, name, model_dir, args, out, prompts_file)
        else:
            data = quant_tui_bench(server.url, args, out)
        cpu = CpuUse.between(before, CpuSnapshot.take(server.pid))
    window = sampler.window
    data["server_itl_ms"] = window.itl.mean_ms if window is not None and window.itl else None
    data["server_ttft_ms"] = window.ttft.mean_ms if window is not None and window.ttft else None
    data["starved"] = starved(window, data)
    data["busy"] = cpu.busy(float(data["duration"]))
    data["lines"] = [_server_line(window, data), cpu.line(float(data["duration"]))]
    if waited:
        data["lines"].append(f"waited {waited:.0f} s past the settle pause for other processes to calm down")
    if data["starved"]:
        data["lines"].append(f"client starved: its median ITL < {STARVED_ITL_SHARE:g} x the server's")
    if data["busy"]:
        data["lines"].append(f"box busy: other processes or steal took > {BUSY_CORES:g} cores")
    return data


def main() -> int:
    """Starts the server, runs the rounds, prints each run and the ratios; 1 when they disagree."""
    args = parse_args()
    try:
        model_dir = resolve_model(args.model)
        cpus = None if args.no_pin else split_cpus(args.server_cpus, args.client_cpus)
    except (QuantTuiError, ValueError) as error:
        print(f"compare_vllm_bench: error: {error}", file=sys.stderr)
        return 2
    server = VllmServer(
        ServerConfig(model=model_dir, enforce_eager=not args.compiled, max_model_len=1024, cpu_kvcache_gib=1)
    )
    runs: dict[str, list[dict[str, Any]]] = {"vllm bench serve": [], "quant-tui bench": []}
    with tempfile.TemporaryDirectory(prefix="compare-vllm-bench-") as folder:
        try:
            start_server(server, cpus)
            from engine.bench.load_spec import LoadSpec
            from engine.bench.loadgen import run_load, served_model_name, timed_prompts

            name = served_model_name(server.url)
            print(f"server: {' '.join(server.argv[1:])}")
            print(
                f"load: {args.num_prompts} prompts, {args.input_len} in / {args.output_len} out, concurrency "
                f"{args.concurrency}, ignore_eos, no temperature, {args.num_warmups} warm-ups; "
                f"medians over {args.rounds} calm rounds (at most {args.max_rounds} rounds)"
            )
            prompts_file: Path | None = None
            prompts: list[str] = []
            if args.vllm_prompts == "same":
                prompts_file = Path(folder) / "quant-tui-prompts.jsonl"
                spec = LoadSpec(
                    concurrency=args.concurrency,
                    prompt_tokens=args.input_len,
                    output_tokens=args.output_len,
                    requests=args.num_prompts,
                    model=name,
                )
                prompts = timed_prompts(server.url, spec)
                write_prompts(prompts, prompts_file)
            print(
                f"vLLM's prompts: {'quant-tui exact prompts (custom dataset)' if prompts_file else 'its random dataset'}"
            )
            # The server's very first requests (allocations, first batch shapes) belong to neither tool, and
            # one pass of the prompts leaves the prefix cache as every measured run will find it.
            run_load(
                server.url, LoadSpec(concurrency=args.concurrency, requests=2 * args.concurrency, model=name)
            )
            if prompts:
                run_load(
                    server.url,
                    LoadSpec(
                        args.concurrency,
                        output_tokens=1,
                        requests=len(prompts),
                        prompts=tuple(prompts),
                        model=name,
                    ),
                )
            round_index = calm = 0
            while calm < args.rounds and round_index < args.max_rounds:
                order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
                for tool in order:
                    out = Path(folder) / f"{tool.split()[0]}-{round_index}.json"
                    data = one_run(tool, server, name, model_dir, args, out, prompts_file)
                    runs[tool].append(data)
                    figures = ", ".join(f"{label} {data[key]:.2f}" for label, key in FIGURES)
                    print(
                        f"round {round_index + 1} {tool:<17} completed {data['completed']}, "
                        f"input tokens {data['total_input_tokens']}: {figures}"
                    )
                    for line in data["lines"]:
                        print(f"{'':>25}{line}")
                calm += not any(run[-1]["starved"] or run[-1]["busy"] for run in runs.values())
                round_index += 1
        finally:
            server.stop()
    return 0 if report(runs, args.rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
