"""Builds the demo model's files (tokenizer, trained Llama weights, card); run as ``python -m engine.model.demo_training``.

This is the torch side of :mod:`engine.model.demo`. It runs in its own process so that the app never
imports torch, and it reports progress as one JSON object per line on stdout::

    {"stage": "train", "step": 10, "total": 500, "loss": 5.1, "message": "training"}

It writes into ``--out`` only; making the folder look complete (marker file, atomic rename) is the
caller's job.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
# Order fixes the ids: unk 0, bos 1, eos 2, pad 3 (the Llama convention for the first three).
SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)

# A plain "role: content" template so that /v1/chat/completions works on the demo model too.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the demo model's weights; recorded in its card."""

    vocab_size: int = 2048
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 768
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    seq_len: int = 128
    batch_size: int = 16
    # 150 steps (about 25 passes over the corpus) take ~2 minutes on 2 cores and land near the best
    # held-out perplexity these settings reach; longer training starts to memorize the corpus.
    steps: int = 150
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 20
    weight_decay: float = 0.1
    # Training-only dropout on embeddings, attention probabilities and both residual branches: the
    # corpus is ~12k tokens, and without it the model memorizes it within ~100 steps.
    dropout: float = 0.1
    seed: int = 1234
    threads: int = 2


def _emit(stage: str, step: int, total: int, loss: float | None = None, message: str = "") -> None:
    """Writes one progress line for the parent process."""
    line = {"stage": stage, "step": step, "total": total, "loss": loss, "message": message}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _paragraphs(text: str) -> list[str]:
    """Splits a corpus file into its blank-line-separated paragraphs."""
    return [block.strip() for block in text.split("\n\n") if block.strip()]


def train_tokenizer(train_text: str, vocab_size: int) -> Tokenizer:
    """Trains a byte-level BPE tokenizer that adds ``<s>`` in front of every encoded text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_paragraphs(train_text), trainer=trainer)
    bos_id = special_id(tokenizer, BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tokenizer


def special_id(tokenizer: Tokenizer, token: str) -> int:
    """The id of one of :data:`SPECIAL_TOKENS`, which every tokenizer built here has."""
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer lacks {token}")
    return int(token_id)


def token_stream(tokenizer: Tokenizer, text: str) -> list[int]:
    """Encodes every paragraph as ``<s> paragraph </s>`` and concatenates them."""
    bos = special_id(tokenizer, BOS_TOKEN)
    eos = special_id(tokenizer, EOS_TOKEN)
    stream: list[int] = []
    for encoding in tokenizer.encode_batch(_paragraphs(text), add_special_tokens=False):
        stream.extend([bos, *encoding.ids, eos])
    return stream


def _save_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    """Saves the tokenizer the way ``AutoTokenizer.from_pretrained`` and vLLM load it."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(out)
    # transformers 5 writes neither file the way older readers (transformers 4, other tools) expect.
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": UNK_TOKEN, "pad_token": PAD_TOKEN}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _learning_rate(settings: TrainSettings, step: int) -> float:
    """Linear warm-up, then cosine decay to the minimum learning rate."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return settings.min_learning_rate + (settings.learning_rate - settings.min_learning_rate) * cosine


def _add_training_dropout(model: Any, probability: float) -> list[Any]:
    """Adds dropout (active only in training mode) without changing the saved architecture.

    Returns:
        The hook handles; remove them, and reset ``attention_dropout``, before saving.
    """
    import torch

    def drop(module: Any, _inputs: Any, output: Any) -> Any:
        if not module.training:
            return output
        if isinstance(output, tuple):
            return (torch.nn.functional.dropout(output[0], probability, True), *output[1:])
        return torch.nn.functional.dropout(output, probability, True)

    handles = [model.model.embed_tokens.register_forward_hook(drop)]
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = probability
        handles.append(layer.self_attn.register_forward_hook(drop))
        handles.append(layer.mlp.register_forward_hook(drop))
    return handles


def _remove_training_dropout(model: Any, handles: list[Any]) -> None:
    """Undoes :func:`_add_training_dropout`."""
    for handle in handles:
        handle.remove()
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.0


def evaluate_perplexity(model: Any, stream: list[int], seq_len: int) -> tuple[float, int]:
    """Returns (perplexity, scored tokens) over consecutive ``seq_len``-token windows of ``stream``."""
    import torch

    model.eval()
    total_nll = 0.0
    total_tokens = 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, seq_len):
            window = stream[start : start + seq_len + 1]
            if len(window) < 2:
                break
            ids = torch.tensor([window], dtype=torch.long)
            logits = model(input_ids=ids[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum")
            total_nll += float(nll)
            total_tokens += len(window) - 1
    model.train()
    return math.exp(total_nll / total_tokens), total_tokens


def _batch(stream: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """Random ``seq_len + 1`` windows of the training stream, one per batch row."""
    import torch

    starts = torch.randint(0, len(stream) - settings.seq_len - 1, (settings.batch_size,), generator=generator)
    return torch.stack([stream[s : s + settings.seq_len + 1] for s in starts.tolist()])


def build(corpus_dir: Path, out: Path, settings: TrainSettings) -> dict[str, Any]:
    """Trains tokenizer and model on ``corpus_dir`` and writes them plus a card into ``out``.

    Returns:
        The model card that was written to ``demo_model_card.json``.
    """
    import torch
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.monotonic()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()

    train_text = (corpus_dir / "train.txt").read_text(encoding="utf-8")
    heldout_text = (corpus_dir / "heldout.txt").read_text(encoding="utf-8")

    _emit("tokenizer", 0, 1, message="training the BPE tokenizer")
    tokenizer = train_tokenizer(train_text, settings.vocab_size)
    train_stream = torch.tensor(token_stream(tokenizer, train_text), dtype=torch.long)
    heldout_stream = token_stream(tokenizer, heldout_text)
    _emit("tokenizer", 1, 1, message=f"tokenizer ready, {len(train_stream)} training tokens")

    config = LlamaConfig(
        vocab_size=settings.vocab_size,
        hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size,
        num_hidden_layers=settings.num_hidden_layers,
        num_attention_heads=settings.num_attention_heads,
        num_key_value_heads=settings.num_key_value_heads,
        head_dim=settings.head_dim,
        max_position_embeddings=settings.max_position_embeddings,
        rms_norm_eps=settings.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": settings.rope_theta},
        tie_word_embeddings=False,
        bos_token_id=special_id(tokenizer, BOS_TOKEN),
        eos_token_id=special_id(tokenizer, EOS_TOKEN),
        pad_token_id=special_id(tokenizer, PAD_TOKEN),
    )
    model = LlamaForCausalLM(config)
    model.train()
    dropout_hooks = _add_training_dropout(model, settings.dropout)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.learning_rate,
        betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(settings.seed)
    loss_value = float("nan")
    for step in range(settings.steps):
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(settings, step)
        batch = _batch(train_stream, settings, generator)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = float(loss)
        _emit("train", step + 1, settings.steps, loss_value, "training")

    _remove_training_dropout(model, dropout_hooks)
    _emit("evaluate", 0, 1, message="measuring held-out perplexity")
    model = model.bfloat16()
    heldout_ppl, heldout_tokens = evaluate_perplexity(model, heldout_stream, settings.seq_len)
    _emit("evaluate", 1, 1, message=f"held-out perplexity {heldout_ppl:.1f}")

    _emit("save", 0, 1, message="saving")
    out.mkdir(parents=True, exist_ok=True)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(out, safe_serialization=True)
    _add_legacy_dtype(out / "config.json")
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        max_new_tokens=128,
    ).save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    card = {
        "name": "quant-tui-demo",
        "architecture": "LlamaForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "bfloat16",
        "corpus_bytes": {
            "train": len(train_text.encode("utf-8")),
            "heldout": len(heldout_text.encode("utf-8")),
        },
        "train_tokens": len(train_stream),
        "heldout_tokens_scored": heldout_tokens,
        "final_train_loss": loss_value,
        "heldout_perplexity": heldout_ppl,
        "heldout_perplexity_method": (
            f"bfloat16 weights; heldout.txt encoded as '<s> paragraph </s>' per paragraph, concatenated, "
            f"scored in consecutive {settings.seq_len}-token windows"
        ),
        "uniform_perplexity": settings.vocab_size,
        "settings": asdict(settings),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "build_seconds": round(time.monotonic() - started, 1),
    }
    (out / "demo_model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_readme(card), encoding="utf-8")
    _emit("save", 1, 1, message="saved")
    return card


def _add_legacy_dtype(config_path: Path) -> None:
    """Adds ``torch_dtype`` next to transformers 5's ``dtype`` for readers that only know the old key."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["torch_dtype"] = config["dtype"]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _readme(card: dict[str, Any]) -> str:
    """A short human-readable model card."""
    settings = card["settings"]
    return (
        "# quant-tui-demo\n\n"
        "A small Llama-architecture model built and trained by quant-tui itself (no download) on the "
        "original English text in `engine/data/demo_corpus/`. It exists so that output, perplexity and "
        "the effect of quantization are measurable on any machine. It is not a useful language model.\n\n"
        f"- parameters: {card['parameters']:,} (bfloat16)\n"
        f"- layers {settings['num_hidden_layers']}, hidden {settings['hidden_size']}, "
        f"heads {settings['num_attention_heads']} (kv {settings['num_key_value_heads']}, "
        f"head dim {settings['head_dim']}), intermediate {settings['intermediate_size']}, "
        f"vocab {settings['vocab_size']} (byte-level BPE)\n"
        f"- training: {settings['steps']} AdamW steps, batch {settings['batch_size']} x "
        f"{settings['seq_len']} tokens, lr {settings['learning_rate']} (cosine to "
        f"{settings['min_learning_rate']}), seed {settings['seed']}\n"
        f"- final training loss: {card['final_train_loss']:.3f}\n"
        f"- held-out perplexity: {card['heldout_perplexity']:.1f} "
        f"(uniform would be {card['uniform_perplexity']}); {card['heldout_perplexity_method']}\n"
        f"- build time: {card['build_seconds']} s\n"
    )


def _die_with_parent() -> None:
    """Asks Linux to end this process if the process that started it dies (no-op elsewhere)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        return


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point used by :func:`engine.model.demo.build_demo_model`."""
    parser = argparse.ArgumentParser(prog="python -m engine.model.demo_training", description=__doc__)
    parser.add_argument("--corpus-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    args = parser.parse_args(argv)
    _die_with_parent()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    build(args.corpus_dir, args.out, TrainSettings(steps=args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
