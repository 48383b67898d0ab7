"""Tests for the embedded demo model: corpus, cache folder, build safety and the built model itself."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from engine.errors import QuantTuiError
from engine.model import demo
from engine.model.demo import (
    COMPLETE_MARKER,
    DEMO_MODEL_NAME,
    DEMO_MODEL_VERSION,
    DemoBuildProgress,
    build_demo_model,
    demo_corpus_path,
    demo_model_dir,
    ensure_demo_model,
    is_demo_model_complete,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Bounds for the held-out perplexity of the standard build; uniform guessing over the vocabulary is 2048.
MAX_HELDOUT_PERPLEXITY = 300.0


# --- corpus and paths (fast) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "min_bytes", "max_bytes"),
    [("train", 40_000, 60_000), ("heldout", 4_000, 8_000), ("calibration", 4_000, 8_000)],
)
def test_corpus_file_is_plain_paragraphs_of_the_right_size(kind: str, min_bytes: int, max_bytes: int) -> None:
    path = demo_corpus_path(kind)  # type: ignore[arg-type]
    text = path.read_text(encoding="utf-8")
    assert min_bytes <= len(text.encode("utf-8")) <= max_bytes
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    assert len(paragraphs) >= 10
    assert text.isascii()


def test_corpus_splits_do_not_share_paragraphs() -> None:
    def paragraphs(kind: str) -> set[str]:
        text = demo_corpus_path(kind).read_text(encoding="utf-8")  # type: ignore[arg-type]
        return {p.strip() for p in text.split("\n\n") if p.strip()}

    train, heldout, calibration = paragraphs("train"), paragraphs("heldout"), paragraphs("calibration")
    assert not train & heldout
    assert not train & calibration
    assert not heldout & calibration


def test_unknown_corpus_kind_is_a_one_line_error() -> None:
    with pytest.raises(QuantTuiError, match="train, heldout or calibration") as error:
        demo_corpus_path("test")  # type: ignore[arg-type]
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("env", "explicit", "expected"),
    [
        ({"QUANT_TUI_CACHE": "/srv/qt"}, None, Path("/srv/qt")),
        ({"QUANT_TUI_CACHE": "/srv/qt"}, Path("/elsewhere"), Path("/elsewhere")),
        ({"XDG_CACHE_HOME": "/xdg"}, None, Path("/xdg/quant-tui")),
    ],
)
def test_demo_model_dir_is_versioned_under_the_cache(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], explicit: Path | None, expected: Path
) -> None:
    monkeypatch.delenv("QUANT_TUI_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert demo_model_dir(explicit) == expected / f"demo-model-v{DEMO_MODEL_VERSION}"


def test_importing_demo_model_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, engine.model.demo; "
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'vllm') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"stage": "train", "step": 3, "total": 150, "loss": 5.5, "message": "training"}\n',
            DemoBuildProgress("train", 3, 150, 5.5, "training"),
        ),
        (
            '{"stage": "save", "step": 0, "total": 1, "loss": null, "message": "saving"}',
            DemoBuildProgress("save", 0, 1, None, "saving"),
        ),
        ("Writing model shards: 100%\n", None),
        ('{"stage": "train"}', None),
        ("[1, 2]", None),
    ],
)
def test_builder_output_lines_become_progress_reports(line: str, expected: DemoBuildProgress | None) -> None:
    assert demo.parse_progress(line) == expected


def test_folder_without_marker_is_not_complete(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not is_demo_model_complete(folder)
    (folder / COMPLETE_MARKER).write_text("{}")
    assert is_demo_model_complete(folder)


def test_cancel_while_another_build_holds_the_lock_builds_nothing(tmp_path: Path) -> None:
    target = demo_model_dir(tmp_path)
    cancel = threading.Event()
    cancel.set()
    with demo.build_lock(target, None), pytest.raises(QuantTuiError, match="cancelled"):
        ensure_demo_model(tmp_path, cancel=cancel)
    assert not target.exists()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_invalid_build_fails_with_the_builders_one_line_cause(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    with pytest.raises(QuantTuiError, match="--steps must be at least 1") as error:
        build_demo_model(target, steps=0)
    assert "\n" not in str(error.value)
    assert not target.exists()
    assert not list(tmp_path.iterdir())


# --- interrupted builds (start the real builder subprocess, kill it early) ------------------------


def _builder_processes() -> list[int]:
    """This test process's running demo-model builders (other fixtures may own other children)."""
    import psutil

    builders = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "engine.model.demo_training" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                builders.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return builders


@pytest.mark.e2e
def test_killed_builder_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    import os
    import signal

    target = tmp_path / "demo"
    seen: list[DemoBuildProgress] = []

    def kill_builder(report: DemoBuildProgress) -> None:
        seen.append(report)
        if report.stage == "train":
            for pid in _builder_processes():
                os.kill(pid, signal.SIGKILL)

    with pytest.raises(QuantTuiError, match="building the demo model failed") as error:
        build_demo_model(target, steps=5000, progress=kill_builder)
    assert "\n" not in str(error.value)
    assert any(report.stage == "train" for report in seen)
    assert not target.exists()
    assert not list(tmp_path.iterdir())


@pytest.mark.e2e
def test_cancelled_build_stops_the_builder_and_leaves_nothing(tmp_path: Path) -> None:
    cancel = threading.Event()

    def cancel_when_training(report: DemoBuildProgress) -> None:
        if report.stage == "train":
            cancel.set()

    with pytest.raises(QuantTuiError, match="cancelled"):
        ensure_demo_model(tmp_path, progress=cancel_when_training, cancel=cancel)
    assert not demo_model_dir(tmp_path).exists()
    assert not list(tmp_path.glob("*.tmp-*"))
    assert _builder_processes() == []


# --- the built model (one real build per session, shared through the demo_model fixture) ---------


@pytest.fixture(scope="module")
def card(demo_model: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((demo_model / "demo_model_card.json").read_text(encoding="utf-8"))
    return data


@pytest.mark.e2e
@pytest.mark.parametrize(
    "name",
    [
        COMPLETE_MARKER,
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "demo_model_card.json",
        "README.md",
    ],
)
def test_demo_model_folder_has(demo_model: Path, name: str) -> None:
    assert (demo_model / name).is_file()


@pytest.mark.e2e
def test_demo_model_is_the_versioned_cache_folder(demo_model: Path) -> None:
    assert demo_model == demo_model_dir()
    marker = json.loads((demo_model / COMPLETE_MARKER).read_text(encoding="utf-8"))
    assert marker == {"name": DEMO_MODEL_NAME, "version": DEMO_MODEL_VERSION}


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("architectures", ["LlamaForCausalLM"]),
        ("model_type", "llama"),
        ("hidden_size", 256),
        ("num_hidden_layers", 4),
        ("num_attention_heads", 4),
        ("num_key_value_heads", 2),
        ("head_dim", 64),
        ("intermediate_size", 768),
        ("vocab_size", 2048),
        ("max_position_embeddings", 2048),
        ("tie_word_embeddings", False),
        ("rms_norm_eps", 1e-5),
        ("torch_dtype", "bfloat16"),
        ("dtype", "bfloat16"),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
    ],
)
def test_demo_model_config(demo_model: Path, key: str, expected: object) -> None:
    config = json.loads((demo_model / "config.json").read_text(encoding="utf-8"))
    assert config[key] == expected


@pytest.mark.e2e
def test_demo_model_rope_theta(demo_model: Path) -> None:
    config = json.loads((demo_model / "config.json").read_text(encoding="utf-8"))
    assert config["rope_parameters"]["rope_theta"] == 10000.0


@pytest.mark.e2e
def test_every_weight_is_bfloat16_and_every_linear_fits_group_size_128(demo_model: Path) -> None:
    raw = (demo_model / "model.safetensors").read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    assert header["__metadata__"]["format"] == "pt"
    assert {info["dtype"] for info in tensors.values()} == {"BF16"}
    for name, info in tensors.items():
        if name.endswith("proj.weight") or name == "lm_head.weight":
            assert info["shape"][1] % 128 == 0, name


@pytest.mark.e2e
@pytest.mark.parametrize(
    "text",
    [
        "The engineer looked at the dashboard and frowned.",
        "Quantization stores weights in 4 bits; the KV cache holds 12,345 tokens!",
        "  leading spaces, tabs\tand\nnew lines  ",
        "naïve café – déjà vu 🙂",
    ],
)
def test_tokenizer_round_trips_text_and_adds_bos(demo_model: Path, text: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id == 1
    assert tokenizer.eos_token == "</s>"
    assert max(ids) < 2048
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.e2e
def test_tokenizer_compresses_english(demo_model: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    text = demo_corpus_path("heldout").read_text(encoding="utf-8")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(text) / len(ids) > 3.0


@pytest.mark.e2e
def test_recorded_heldout_perplexity_is_far_below_uniform(card: dict[str, object]) -> None:
    perplexity = float(card["heldout_perplexity"])  # type: ignore[arg-type]
    assert 1.0 < perplexity < MAX_HELDOUT_PERPLEXITY
    assert card["uniform_perplexity"] == 2048


@pytest.mark.e2e
def test_recorded_perplexity_matches_the_saved_weights(demo_model: Path, card: dict[str, object]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.bfloat16).eval()
    seq_len = int(card["settings"]["seq_len"])  # type: ignore[index]
    stream: list[int] = []
    text = demo_corpus_path("heldout").read_text(encoding="utf-8")
    for paragraph in (p.strip() for p in text.split("\n\n") if p.strip()):
        stream += [*tokenizer(paragraph)["input_ids"], tokenizer.eos_token_id]
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, seq_len):
            window = torch.tensor([stream[start : start + seq_len + 1]])
            logits = model(input_ids=window[:, :-1]).logits.float()
            total_nll += float(torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum"))
            total_tokens += window.shape[1] - 1
    assert total_tokens == card["heldout_tokens_scored"]
    assert math.exp(total_nll / total_tokens) == pytest.approx(card["heldout_perplexity"], rel=0.02)


@pytest.mark.e2e
def test_demo_model_generates_known_words(demo_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.bfloat16).eval()
    prompt = tokenizer("The server", return_tensors="pt")
    output = model.generate(**prompt, max_new_tokens=30, do_sample=False)
    text = str(tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True))
    vocabulary = set(demo_corpus_path("train").read_text(encoding="utf-8").lower().split())
    words = [w.strip(".,;:!?\"'") for w in text.lower().split()]
    known = [w for w in words if w and w in vocabulary]
    assert len(words) >= 5
    assert len(known) >= 0.6 * len(words), text


@pytest.mark.e2e
def test_second_ensure_reuses_the_folder_without_building(demo_model: Path) -> None:
    marker = demo_model / COMPLETE_MARKER
    before = marker.stat()
    reports: list[DemoBuildProgress] = []
    assert ensure_demo_model(progress=reports.append) == demo_model
    assert reports == []
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
