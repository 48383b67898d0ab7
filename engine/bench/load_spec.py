"""What load to send: the load settings and their check, and each request's prompt and lengths."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from engine.errors import QuantTuiError

__all__ = ["LoadError", "LoadSpec", "length_for", "make_prompt", "read_prompt_file"]

# Short common words (split at use); with any English-trained BPE most of them are one token each, so a prompt of N
# words is about N tokens. The server's own count comes back in the usage chunk.
_PROMPT_WORDS = (
    "the of and to in is was for on that with as by at from his her it an were are which this be "
    "or has had not but one all their they new more first two after who time year also been other "
    "people city over can into some would only its most world made may such later than many "
    "where during state school part when water music small house light river early north south"
)


class LoadError(QuantTuiError):
    """The load cannot be run as asked (bad settings, or no server to send it to)."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What load to send.

    Attributes:
        concurrency: Most requests in flight at once (vLLM ``--max-concurrency``).
        prompt_tokens: Prompt length, in tokens (approximate: built from common words).
        output_tokens: ``max_tokens`` of each request; with ``ignore_eos`` every request generates exactly this many.
        requests: How many requests to send in all (``None``: until ``duration_s``).
        duration_s: Stop releasing requests after this many seconds (``None``: until ``requests``).
        model: The served model name; ``None`` asks the server's ``/v1/models``.
        timeout_s: Give up on one request after this many seconds in all.
        ignore_eos: Ask vLLM to ignore the end-of-sequence token so output lengths are exact.
        seed: Seed for prompts, lengths and arrivals, so the same spec sends the same load.
        request_rate: Mean requests per second of the arrival process; ``inf`` releases all at once
            and the concurrency alone paces them (a closed loop).
        burstiness: Gamma shape of the arrival gaps (1: Poisson), as vLLM's ``--burstiness``.
        prompt_range: Prompt lengths are drawn uniformly from ``prompt_tokens * (1 ± prompt_range)``.
        output_range: The same for output lengths (vLLM ``--random-range-ratio``).
        num_warmups: Requests sent before the timed run, left out of every figure.
        temperature: Sampling temperature sent; ``None`` sends none, so the server's default applies (as vLLM).
        prompts: The prompts to send, in order and again from the first when there are fewer than requests
            (a dataset file's, as vLLM's ``--dataset-name custom``); empty: word prompts cut to ``prompt_tokens``.
    """

    concurrency: int = 4
    prompt_tokens: int = 64
    output_tokens: int = 64
    requests: int | None = 32
    duration_s: float | None = None
    model: str | None = None
    timeout_s: float = 120.0
    ignore_eos: bool = True
    seed: int = 0
    request_rate: float = math.inf
    burstiness: float = 1.0
    prompt_range: float = 0.0
    output_range: float = 0.0
    num_warmups: int = 0
    temperature: float | None = None
    prompts: tuple[str, ...] = ()

    def check(self) -> None:
        """Raises :class:`LoadError` with a one-line reason when the settings cannot work."""
        if self.concurrency < 1:
            raise LoadError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.prompt_tokens < 1 or self.output_tokens < 1:
            raise LoadError("prompt and output lengths must be at least 1 token")
        if self.requests is None and self.duration_s is None:
            raise LoadError("give a number of requests or a duration for the load")
        if self.requests is not None and self.requests < 1:
            raise LoadError(f"the number of requests must be at least 1, not {self.requests}")
        if self.duration_s is not None and not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise LoadError(f"the duration must be a positive number of seconds, not {self.duration_s}")
        if not self.timeout_s > 0:
            raise LoadError(f"the request timeout must be positive, not {self.timeout_s}")
        if not self.request_rate > 0:
            raise LoadError(f"the request rate must be positive (or inf), not {self.request_rate}")
        if not self.burstiness > 0:
            raise LoadError(f"burstiness must be positive, not {self.burstiness}")
        for name, ratio in (("prompt", self.prompt_range), ("output", self.output_range)):
            if not 0.0 <= ratio < 1.0:
                raise LoadError(f"the {name} length range must be in [0, 1), not {ratio}")
        if self.num_warmups < 0:
            raise LoadError(f"the number of warm-up requests cannot be negative, not {self.num_warmups}")
        if self.temperature is not None and not self.temperature >= 0:
            raise LoadError(f"the temperature must be 0 or more, not {self.temperature}")


def read_prompt_file(path: Path) -> tuple[str, ...]:
    """The prompts of a JSONL file, one ``{"prompt": "..."}`` object a line, as vLLM's custom dataset reads it.

    Other fields (``output_tokens``) are ignored: ``--output-len`` sets every request's length. Blank lines
    are skipped.

    Raises:
        LoadError: The file cannot be read, a line is not a JSON object with a text ``prompt``, or it has none.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise LoadError(f"cannot read the dataset {path} ({reason})", "give a JSONL file") from error
    prompts: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        prompt = item.get("prompt") if isinstance(item, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise LoadError(
                f'line {number} of the dataset {path} is not a JSON object with a text "prompt"',
                'write one {"prompt": "..."} object a line',
            )
        prompts.append(prompt)
    if not prompts:
        raise LoadError(f"the dataset {path} has no prompt", 'write one {"prompt": "..."} object a line')
    return tuple(prompts)


def make_prompt(prompt_tokens: int, index: int, seed: int = 0) -> str:
    """A prompt of about ``prompt_tokens`` tokens, different for every request index.

    Args:
        prompt_tokens: Approximate length in tokens (one common word each).
        index: The request's index; prompts differ so the prefix cache does not flatter the numbers.
        seed: Seed of the word choice.
    """
    chooser = random.Random(seed * 1_000_003 + index)
    words = _PROMPT_WORDS.split()
    return " ".join(chooser.choice(words) for _ in range(prompt_tokens))


def length_for(length: int, range_ratio: float, index: int, seed: int, salt: int) -> int:
    """One request's length, uniform over vLLM's ``[floor(L(1-r)), ceil(L(1+r))]`` (at least 1)."""
    if range_ratio <= 0:
        return length
    low = max(1, math.floor(length * (1 - range_ratio)))
    high = max(low, math.ceil(length * (1 + range_ratio)))
    return random.Random((seed * 1_000_003 + index) * 4 + salt).randint(low, high)
