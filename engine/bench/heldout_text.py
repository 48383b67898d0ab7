"""Held-out text for the quality check (the scoring itself is ``engine.bench.quality``, through a served model)."""

from __future__ import annotations

from pathlib import Path

from engine.errors import QuantTuiError


def heldout_samples(path: Path, samples: int = 8, words_per_sample: int = 120) -> list[str]:
    """Cuts a text file into up to ``samples`` consecutive pieces of ``words_per_sample`` words.

    A trailing piece shorter than half that is dropped, so every sample carries real context.

    Raises:
        QuantTuiError: the file cannot be read or is too short.
    """
    try:
        words = path.read_text(encoding="utf-8").split()
    except OSError as error:
        raise QuantTuiError(
            f"cannot read held-out text {path} ({error.strerror}); pass a readable text file"
        ) from None
    pieces = [" ".join(words[i : i + words_per_sample]) for i in range(0, len(words), words_per_sample)]
    pieces = [piece for piece in pieces if len(piece.split()) >= words_per_sample // 2][:samples]
    if not pieces:
        raise QuantTuiError(f"held-out text {path} is too short; give it at least {words_per_sample} words")
    return pieces
