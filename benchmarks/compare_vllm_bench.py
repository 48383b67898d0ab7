"""`vllm bench serve` against `quant-tui bench --url` on one demo server with the same load: the ratios of their figures.

Usage: ``flock /tmp/quant-tui-heavy.lock python benchmarks/compare_vllm_bench.py [--model demo] [--rounds 4]
[--num-prompts 64] [--input-len 64] [--output-len 64] [--concurrency 4] [--settle-s 3]
[--vllm-prompts same|random] [--compiled]``.

One server is started through quant-tui's launcher. Each round runs vLLM's own benchmark (the
``vllm.benchmarks.serve`` module in a subprocess: the ``vllm`` console script is broken in the CPU
wheel) and then ``quant-tui bench --url`` (also a subprocess), with the same load,
``ignore_eos`` and no temperature; the server's own ``/metrics`` window is read around each run as
the referee: the client's mean TTFT minus the server's own mean TTFT is the time the client itself
adds, which the machine's load does not change much. The server is warmed up once before the first
round (its first requests after start-up are slow for everyone), every run starts after the same
settle pause, and rounds alternate which tool goes first (A B, B A, A B, ...), so neither tool is
always the one that meets a freshly busy or freshly idle server; the ratios are taken within each
round and their median is reported. Both tools send the same prompts by default: quant-tui's, cut to
exactly ``--input-len`` tokens by the server's tokenizer, are written to a JSONL file that vLLM's custom
dataset sends in order (``--vllm-prompts random`` gives vLLM its random dataset instead: random token ids
decoded to text, whose TTFT differs for reasons of content, not of measurement). A round where either
client read its streams in bunches (its median ITL under half the server's mean ITL: something else on the
machine starved it of CPU) measures the machine, not the tool, and is left out of the ratios when a calm
round remains. Agreement: output tok/s, median TTFT and median TPOT within 10 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.bench.server_truth import ServerSampler, ServerWindow
from engine.errors import QuantTuiError
from engine.model.reference import resolve_model
from engine.serve.launcher import ServerConfig, VllmServer

# figure -> (relative tolerance, absolute tolerance in the figure's unit)
TOLERANCES = {
    "output_throughput": (0.10, 0.0),
    "median_tpot_ms": (0.10, 0.0),
    "median_ttft_ms": (0.10, 0.0),
}
FIGURES = (
    ("output tok/s", "output_throughput"),
    ("median TPOT ms", "median_tpot_ms"),
    ("median TTFT ms", "median_ttft_ms"),
    ("median ITL ms", "median_itl_ms"),
    ("median E2EL ms", "median_e2el_ms"),
)

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
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads(out.read_text()))


def quant_tui_bench(url: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Runs `quant-tui bench --url` in a subprocess; its saved result."""
    argv = [sys.executable, "-m", "tui.cli", "bench", "--url", url]
    argv += ["--input-len", str(args.input_len), "--output-len", str(args.output_len)]
    argv += ["--num-prompts", str(args.num_prompts), "--concurrency", str(args.concurrency)]
    argv += ["--num-warmups", str(args.num_warmups), "--save-result", str(out)]
    if args.server_sample_interval is not None:
        argv += ["--server-sample-interval", str(args.server_sample_interval)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads(out.read_text()))


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


def _within(key: str, ours: float, theirs: float) -> bool:
    relative, absolute = TOLERANCES[key]
    return abs(ours - theirs) <= max(relative * abs(theirs), absolute)


def main() -> int:
    """Starts the server, runs the rounds, prints each run and the ratios; 1 when they disagree."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--num-warmups", type=int, default=4)
    parser.add_argument("--settle-s", type=float, default=3.0, help="idle seconds before every run")
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
    try:
        model_dir = resolve_model(args.model)
    except QuantTuiError as error:
        print(f"compare_vllm_bench: error: {error}", file=sys.stderr)
        return 2
    server = VllmServer(
        ServerConfig(model=model_dir, enforce_eager=not args.compiled, max_model_len=1024, cpu_kvcache_gib=1)
    )
    runs: dict[str, list[dict[str, Any]]] = {"vllm bench serve": [], "quant-tui bench": []}
    with tempfile.TemporaryDirectory(prefix="compare-vllm-bench-") as folder:
        try:
            server.start()
            server.wait_healthy(timeout=600)
            from engine.bench.loadgen import served_model_name

            name = served_model_name(server.url)
            print(f"server: {' '.join(server.argv[1:])}")
            print(
                f"load: {args.num_prompts} prompts, {args.input_len} in / {args.output_len} out, concurrency "
                f"{args.concurrency}, ignore_eos, no temperature, {args.num_warmups} warm-ups; {args.rounds} rounds"
            )
            from engine.bench.load_spec import LoadSpec
            from engine.bench.loadgen import run_load, timed_prompts

            prompts_file: Path | None = None
            if args.vllm_prompts == "same":
                prompts_file = Path(folder) / "quant-tui-prompts.jsonl"
                spec = LoadSpec(
                    concurrency=args.concurrency,
                    prompt_tokens=args.input_len,
                    output_tokens=args.output_len,
                    requests=args.num_prompts,
                    model=name,
                )
                write_prompts(timed_prompts(server.url, spec), prompts_file)
            print(
                f"vLLM's prompts: {'quant-tui exact prompts (custom dataset)' if prompts_file else 'its random dataset'}"
            )

            # The server's very first requests (allocations, first batch shapes) belong to neither tool.
            run_load(
                server.url, LoadSpec(concurrency=args.concurrency, requests=2 * args.concurrency, model=name)
            )
            for round_index in range(args.rounds):
                order = list(runs) if round_index % 2 == 0 else list(reversed(runs))
                for tool in order:
                    out = Path(folder) / f"{tool.split()[0]}-{round_index}.json"
                    time.sleep(args.settle_s)
                    with ServerSampler(server.url, interval_s=0) as sampler:
                        if tool.startswith("vllm"):
                            data = vllm_bench(server.url, name, model_dir, args, out, prompts_file)
                        else:
                            data = quant_tui_bench(server.url, args, out)
                    data["starved"] = starved(sampler.window, data)
                    runs[tool].append(data)
                    figures = ", ".join(f"{label} {data[key]:.2f}" for label, key in FIGURES)
                    print(
                        f"round {round_index + 1} {tool:<17} completed {data['completed']}, input tokens {data['total_input_tokens']}: {figures}"
                    )
                    print(f"{'':>25}{_server_line(sampler.window, data)}")
                    if data["starved"]:
                        print(
                            f"{'':>25}client starved: its median ITL < {STARVED_ITL_SHARE:g} x the server's"
                        )
        finally:
            server.stop()
    agree = True
    calm = [
        index
        for index, (ours, theirs) in enumerate(
            zip(runs["quant-tui bench"], runs["vllm bench serve"], strict=True)
        )
        if not ours["starved"] and not theirs["starved"]
    ]
    kept = calm or list(range(args.rounds))
    ours_runs = [runs["quant-tui bench"][index] for index in kept]
    theirs_runs = [runs["vllm bench serve"][index] for index in kept]
    print(
        f"rounds where neither client was starved: {', '.join(str(index + 1) for index in calm) or 'none'}"
        + ("" if calm else " (all rounds kept)")
    )
    print(
        "quant-tui / vllm: median over those rounds of each round's ratio (medians of the figures in brackets)"
    )
    for label, key in FIGURES:
        ratios = [ours[key] / theirs[key] for ours, theirs in zip(ours_runs, theirs_runs, strict=True)]
        ratio = statistics.median(ratios)
        ours_median = statistics.median(run[key] for run in ours_runs)
        theirs_median = statistics.median(run[key] for run in theirs_runs)
        verdict = ""
        if key in TOLERANCES:
            within = _within(key, ratio * theirs_median, theirs_median)
            agree = agree and within
            relative, absolute = TOLERANCES[key]
            bound = f"{relative:.0%}" + (f" or {absolute:g} ms" if absolute else "")
            verdict = f"  within {bound}: {'yes' if within else 'NO'}"
        print(
            f"  {label:<16} {ratio:.3f}  [{ours_median:9.2f} / {theirs_median:9.2f}]  "
            f"rounds {', '.join(f'{value:.2f}' for value in ratios)}{verdict}"
        )
    print(f"agree on output tok/s, median TPOT and TTFT: {'yes' if agree else 'no'}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
