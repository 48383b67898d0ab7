"""ModelScreen: pick the model (a folder, a cached Hugging Face repo or the demo) and see what was read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.table import Table
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from engine.model.inspect_model import ModelInfo, human_params, inspect_model
from engine.model.reference import DEMO, list_cached_models, resolve_model
from tui.format import home_path, size
from tui.screens.base import StepScreen
from tui.widgets.path_suggester import PathSuggester

if TYPE_CHECKING:
    from engine.model.demo import DemoBuildProgress
    from engine.model.reference import CachedModel


def model_summary(model: ModelInfo) -> Table:
    """What was read from the model's config and weight headers, as a two-column table."""
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value")
    estimated = " (estimated from config)" if model.params_source == "estimate" else ""
    table.add_row("Model", f"{model.name}  ({model.architecture})")
    table.add_row("Folder", home_path(model.path))
    table.add_row(
        "Parameters",
        f"{human_params(model.params)}{estimated}, {human_params(model.linear_params)} in Linear layers",
    )
    table.add_row("Layers", f"{model.num_layers} × hidden {model.hidden_size}, MLP {model.intermediate_size}")
    layout = model.attention
    if layout is not None and (
        layout.mla or layout.sliding_window or layout.attention_chunk_size or layout.mtp_layers
    ):
        # MLA caches one latent, not its 128 heads; hybrid layers and MTP change what is cached.
        attention = f"{model.num_attention_heads} heads; KV cache holds {model.attention_summary}"
    else:
        attention = (
            f"{model.num_attention_heads} heads, {model.num_kv_heads} KV heads, head dim {model.head_dim}"
        )
    table.add_row("Attention", attention)
    table.add_row("Context", f"{model.max_context:,} tokens, vocabulary {model.vocab_size:,}")
    weights = size(model.weight_bytes) if model.weight_bytes else "no weights found (config only)"
    table.add_row("Weights", f"{weights}, {_gguf_types(model) if model.gguf_files else model.torch_dtype}")
    if model.is_moe:
        table.add_row("Experts", f"{model.num_experts}, {model.experts_per_token} per token")
    quantization = (
        f"already quantized: {model.quantization.method}, {model.quantization.scheme}"
        if model.quantization
        else "none (16-bit weights)"
    )
    table.add_row("Quantization", quantization)
    return table


def _gguf_types(model: ModelInfo) -> str:
    """A GGUF file's mix, by share of the weights: "GGUF Q4_K 62%, Q6_K 30%, F32 1%"."""
    total = sum(model.dtype_params.values()) or 1
    ranked = sorted(model.dtype_params.items(), key=lambda item: item[1], reverse=True)[:3]
    return "GGUF " + ", ".join(f"{name} {100 * count / total:.0f}%" for name, count in ranked)


class ModelScreen(StepScreen):
    """Step 2: the model to plan for, loaded header-only (the demo model is built on first use)."""

    MODE = "model"
    HELP_TITLE = "2 Model"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "next", "Next: plan"),
        Binding("slash", "edit_path", "Type a path"),
        Binding("l", "load_typed", "Load typed path"),
        Binding("escape", "leave_input", "Leave the path", show=False),
    ]

    @dataclass
    class Progress(Message):
        """A demo model build reported progress."""

        progress: DemoBuildProgress

    def compose_body(self) -> ComposeResult:
        """Path input and cached models on top, the build progress and summary below."""
        with Horizontal(id="model-top"):
            with Vertical(id="model-path"):
                yield Label("Folder, cached repo id or demo:")
                yield Input(placeholder="demo", id="path", suggester=PathSuggester())
                yield Label("", id="model-status")
                yield ProgressBar(id="build-progress", show_eta=False)
            with Vertical(id="model-cached"):
                yield Label("Models here (Enter loads):")
                yield OptionList(Option("demo  (built-in demo model)", id=DEMO), id="cached")
        yield Static("", id="model-summary")

    def on_mount(self) -> None:
        """Lists cached models and loads the model named at start."""
        super().on_mount()
        self.query_one("#build-progress", ProgressBar).display = False
        path = self.query_one("#path", Input)
        path.value = self.selection.model_reference
        self._list_cached()
        if self.selection.model is None:
            self._load(self.selection.model_reference)
        else:
            self._show(self.selection.model)
        self.query_one("#cached", OptionList).focus()

    @work(
        thread=True,
        exclusive=True,
        group="cached",
        exit_on_error=False,
        description="Listing the models in the Hugging Face cache",
    )
    def _list_cached(self) -> None:
        cached = list_cached_models(self.quant_app.hf_cache)
        self.app.call_from_thread(self._show_cached, cached)

    def _show_cached(self, cached: list[CachedModel]) -> None:
        options = self.query_one("#cached", OptionList)
        for model in cached:
            options.add_option(Option(f"{model.repo_id}  ({size(model.size_bytes)})", id=model.repo_id))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Loads the typed model."""
        event.stop()
        self._load(event.value.strip() or DEMO)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Loads the picked model."""
        event.stop()
        reference = event.option_id or DEMO
        self.query_one("#path", Input).value = reference
        self._load(reference)

    def _load(self, reference: str) -> None:
        self.query_one("#model-status", Label).update(f"Loading {reference}…")
        self._resolve_and_inspect(reference)

    @work(thread=True, exclusive=True, group="load", exit_on_error=False, description="Loading the model")
    def _resolve_and_inspect(self, reference: str) -> None:
        try:
            folder = resolve_model(reference, self.quant_app.hf_cache, on_demo_progress=self._report_build)
            model = inspect_model(folder)
        except Exception:
            self.app.call_from_thread(self._failed)
            raise
        self.app.call_from_thread(self._loaded, reference, model)

    def _report_build(self, event: DemoBuildProgress) -> None:
        self.post_message(self.Progress(event))

    def _failed(self) -> None:
        self.query_one("#model-status", Label).update("Could not load that model (see the message).")
        self.query_one("#build-progress", ProgressBar).display = False

    def on_model_screen_progress(self, message: Progress) -> None:
        """Shows the demo model build's progress."""
        event = message.progress
        bar = self.query_one("#build-progress", ProgressBar)
        bar.display = event.stage != "done"
        bar.update(total=max(event.total, 1), progress=event.step)
        loss = f", loss {event.loss:.2f}" if event.loss is not None else ""
        self.query_one("#model-status", Label).update(
            f"Building the demo model (first time only): {event.stage} {event.step}/{event.total}{loss}"
        )

    def _loaded(self, reference: str, model: ModelInfo) -> None:
        self.quant_app.update_selection(
            model_reference=reference, model=model, candidate=None, serve_dir=None
        )
        self.quant_app.complete_step("model")
        self._show(model)

    def _show(self, model: ModelInfo) -> None:
        self.query_one("#build-progress", ProgressBar).display = False
        self.query_one("#model-status", Label).update(f"Loaded {model.name}. Press n for the plan.")
        self.query_one("#model-summary", Static).update(model_summary(model))

    def action_edit_path(self) -> None:
        """Moves the cursor to the path input."""
        self.query_one("#path", Input).focus()

    def action_leave_input(self) -> None:
        """Leaves the path input for the list, so the screen's keys work again."""
        self.query_one("#cached", OptionList).focus()

    def action_load_typed(self) -> None:
        """Loads what is in the path input."""
        self._load(self.query_one("#path", Input).value.strip() or DEMO)

    def action_next(self) -> None:
        """Goes on to the plan."""
        self.quant_app.action_go("plan")
