"""How `quant-tui bench` and `vllm bench serve` figures of one server compare: plain and server-referenced ratios."""

from __future__ import annotations

import statistics
from typing import Any

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


def within_tolerance(key: str, ours: float, theirs: float) -> bool:
    """Whether ``ours`` is within the figure's tolerance of ``theirs``."""
    relative, absolute = TOLERANCES[key]
    return abs(ours - theirs) <= max(relative * abs(theirs), absolute)


# figure -> (the server's own figure that moves with it, +1 when they move together, -1 when inversely)
REFEREES = {
    "output_throughput": ("server_itl_ms", -1),
    "median_tpot_ms": ("server_itl_ms", 1),
    "median_ttft_ms": ("server_ttft_ms", 1),
    "median_itl_ms": ("server_itl_ms", 1),
    "median_e2el_ms": ("server_itl_ms", 1),
}


def referenced_ratio(key: str, ours: dict[str, Any], theirs: dict[str, Any]) -> float | None:
    """The round's ratio with the server's own speed change between the two runs taken out.

    The server's histograms over each run say how fast it was: if its mean ITL was 10 % longer during
    quant-tui's run, quant-tui's TPOT 10 % longer is the same measurement of a slower server.
    """
    referee, sign = REFEREES[key]
    if not ours.get(referee) or not theirs.get(referee):
        return None
    return float(ours[key] / theirs[key] * (theirs[referee] / ours[referee]) ** sign)


def verdict(key: str, ratio: float | None) -> tuple[bool, str]:
    if key not in TOLERANCES or ratio is None:
        return key not in TOLERANCES, "" if key not in TOLERANCES else "  (no server figure)"
    within = within_tolerance(key, ratio, 1.0)
    relative, absolute = TOLERANCES[key]
    bound = f"{relative:.0%}" + (f" or {absolute:g} ms" if absolute else "")
    return within, f"  within {bound}: {'yes' if within else 'NO'}"


def report(runs: dict[str, list[dict[str, Any]]], wanted: int) -> bool:
    """Prints the ratios over the calm rounds; whether the three figures agree on enough calm rounds.

    The verdict is on the server-referenced ratios (each run's figures against the server's own view of
    that run): the tools measure the same thing when those are 1. The plain ratios are printed beside
    them; they also carry how much faster the shared server happened to run during one run than the other.
    """
    pairs = list(zip(runs["quant-tui bench"], runs["vllm bench serve"], strict=True))
    calm = [index for index, pair in enumerate(pairs) if not any(r["starved"] or r["busy"] for r in pair)]
    kept = calm or list(range(len(pairs)))
    enough = len(calm) >= wanted
    print(
        f"calm rounds (neither client starved, box not busy): {', '.join(str(i + 1) for i in calm) or 'none'}"
        + ("" if calm else " (all rounds kept)")
        + ("" if enough else f"; fewer than the {wanted} asked: the verdict is not trustworthy")
    )
    print(
        "quant-tui / vllm, median over those rounds of each round's ratio (medians of the figures in brackets)"
    )
    agree = {"plain": True, "server-referenced": True}
    for label, key in FIGURES:
        ratios = [pairs[index][0][key] / pairs[index][1][key] for index in kept]
        referenced = [referenced_ratio(key, *pairs[index]) for index in kept]
        ratio = statistics.median(ratios)
        known = [value for value in referenced if value is not None]
        ref_ratio = statistics.median(known) if len(known) == len(referenced) else None
        ours_median = statistics.median(pairs[index][0][key] for index in kept)
        theirs_median = statistics.median(pairs[index][1][key] for index in kept)
        plain_ok, plain_verdict = verdict(key, ratio)
        ref_ok, ref_verdict = verdict(key, ref_ratio)
        agree["plain"] = agree["plain"] and plain_ok
        agree["server-referenced"] = agree["server-referenced"] and ref_ok
        print(
            f"  {label:<16} plain {ratio:.3f}  [{ours_median:9.2f} / {theirs_median:9.2f}]  "
            f"rounds {', '.join(f'{value:.2f}' for value in ratios)}{plain_verdict}"
        )
        if ref_ratio is not None:
            print(
                f"  {'':<16} server-referenced {ref_ratio:.3f}  "
                f"rounds {', '.join(f'{value:.2f}' for value in known)}{ref_verdict}"
            )
    for kind, ok in agree.items():
        print(f"agree on output tok/s, median TPOT and TTFT ({kind}): {'yes' if ok else 'no'}")
    return agree["server-referenced"] and enough
