"""HardwareScreen: what this machine has (a card per GPU, or the host) and which hardware to plan for."""

from __future__ import annotations

import contextlib
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option, OptionDoesNotExist

from engine.errors import HardwareError
from engine.hardware.detect import (
    HardwareSnapshot,
    HardwareTarget,
    detect_hardware,
    target_from_snapshot,
    target_from_spec,
)
from engine.hardware.gpu_catalog import CATALOG
from tui.format import gib
from tui.screens.base import StepScreen

THIS_MACHINE = "detected"
PICK_A_GPU = "Pick a GPU from the list on the right (Enter), or start again with --gpu and a name from it."
BAR_CELLS = 24


def usage_bar(used: int | None, total: int | None) -> Text:
    """A used/total bar drawn with characters (``#`` used, ``.`` free), numbers beside it."""
    if not total or used is None:
        return Text(f"{gib(total)} total" if total else "memory unknown")
    cells = round(used / total * BAR_CELLS)
    bar = Text("[")
    bar.append("#" * cells, style="bold")
    bar.append("." * (BAR_CELLS - cells), style="dim")
    bar.append(f"] {gib(used)} used of {gib(total)}")
    return bar


def gpu_card(snapshot: HardwareSnapshot, index: int) -> RenderableType:
    """The card text for one detected GPU."""
    gpu = snapshot.gpus[index]
    capability = ".".join(map(str, gpu.compute_capability)) if gpu.compute_capability else "unknown"
    lines = [
        Text(f"GPU {gpu.index}: {gpu.name}", style="bold"),
        Text(
            f"compute capability {capability}   driver {snapshot.driver_version or '-'}"
            f"   CUDA {snapshot.cuda_driver_version or '-'}"
        ),
        usage_bar(gpu.memory_used_bytes, gpu.memory_total_bytes),
    ]
    if gpu.mig_mode:
        lines.append(Text("MIG is on: vLLM sees the MIG slices, not the whole GPU", style="italic"))
    return Group(*lines)


def host_card(snapshot: HardwareSnapshot) -> RenderableType:
    """The card text for the host (always shown; the only one without a GPU)."""
    host = snapshot.host
    cores = (
        f"{host.physical_cores} cores / {host.logical_cores} threads"
        if host.physical_cores
        else (f"{host.logical_cores} threads")
    )
    used = host.memory_total_bytes - host.memory_available_bytes
    flags = " ".join(sorted(host.cpu_flags)) or "none of note"
    return Group(
        Text(f"Host: {host.cpu_model}", style="bold"),
        Text(f"{cores}"),
        usage_bar(used, host.memory_total_bytes),
        Text(f"CPU features for vLLM: {flags}"),
    )


def describe_target(target: HardwareTarget) -> str:
    """One line saying what the plan is for."""
    if target.kind == "cpu":
        return f"Planning for: this machine's CPU ({target.name}), {gib(target.memory_bytes)} RAM, vLLM CPU backend"
    where = "catalogue" if target.source == "catalogue" else "detected"
    capability = ".".join(map(str, target.compute_capability)) if target.compute_capability else "?"
    return (
        f"Planning for: {target.count}× {target.name} ({gib(target.memory_bytes)} each, "
        f"cc {capability}, {where})"
    )


class HardwareScreen(StepScreen):
    """Step 1: detected GPUs or the host, and a picker to plan for a catalogued GPU instead."""

    MODE = "hardware"
    HELP_TITLE = "1 Hardware"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "next", "Next: model"),
        Binding("plus,equals_sign", "count(1)", "More GPUs"),
        Binding("minus", "count(-1)", "Fewer GPUs"),
        Binding("r", "detect", "Re-detect"),
    ]

    def compose_body(self) -> ComposeResult:
        """Cards on the left, the target picker on the right."""
        with Horizontal(id="hardware-body"):
            with VerticalScroll(id="cards"):
                yield Static("Detecting hardware…", id="hardware-note")
            with Vertical(id="picker"):
                yield Label("Plan for (Enter picks):")
                yield OptionList(id="targets")
                yield Label("GPUs: 1", id="gpu-count")
        yield Static("", id="target-line")

    def on_mount(self) -> None:
        """Fills the picker and detects the hardware (unless a snapshot was given)."""
        super().on_mount()
        self.gpu_count = 1
        targets = self.query_one("#targets", OptionList)
        targets.add_option(Option("This machine (detected)", id=THIS_MACHINE))
        for model in CATALOG:
            targets.add_option(Option(f"{model.name:<17} {model.memory_gib:4.0f} GiB", id=model.name))
        spec = self.quant_app.gpu_spec
        if spec and self.selection.target is None:
            try:
                target = target_from_spec(spec)
            except HardwareError as error:
                self.quant_app.show_error("Choosing the GPU to plan for", error, fix=PICK_A_GPU)
            else:
                self.gpu_count = target.count
                self.quant_app.update_selection(target=target)
                # Shown at once: the first frame need not wait for this machine's detection.
                self._show_target()
        self.watch(self.quant_app, "selection", self._show_selection, init=False)
        if self.selection.hardware is None:
            # After the first frame: the screen (with its "Detecting hardware…" note) shows at once,
            # and NVML's and psutil's probing does not compete with the first layout for the GIL.
            self.call_after_refresh(self.action_detect)
        else:
            self._show_selection()
        targets.focus()

    def action_detect(self) -> None:
        """Detects GPUs and host in a thread (NVML can take a moment)."""
        self.query_one("#hardware-note", Static).update("Detecting hardware…")
        self._detect()

    @work(thread=True, exclusive=True, exit_on_error=False, description="Detecting the hardware")
    def _detect(self) -> None:
        snapshot = detect_hardware()
        self.app.call_from_thread(self._detected, snapshot)

    def _detected(self, snapshot: HardwareSnapshot) -> None:
        self.quant_app.update_selection(hardware=snapshot)

    def _show_selection(self, _selection: object = None) -> None:
        snapshot = self.selection.hardware
        if snapshot is None:
            return
        if self.selection.target is None:
            self.quant_app.update_selection(target=target_from_snapshot(snapshot))
            self.quant_app.complete_step("hardware")
            return
        self.quant_app.complete_step("hardware")
        cards = self.query_one("#cards", VerticalScroll)
        note = self.query_one("#hardware-note", Static)
        if snapshot.gpus:
            note.update(Text(f"{len(snapshot.gpus)} NVIDIA GPU(s) found.", style="bold"))
        else:
            note.update(
                Text(
                    f"No NVIDIA GPU: {snapshot.nvml_status}.\nvLLM runs on the CPU backend here; "
                    "pick a catalogued GPU on the right to plan for a GPU box.",
                    style="italic",
                )
            )
        for card in cards.query(".card"):
            card.remove()
        renderables = [gpu_card(snapshot, index) for index in range(len(snapshot.gpus))]
        renderables.append(host_card(snapshot))
        cards.mount_all(Static(renderable, classes="card") for renderable in renderables)
        self._show_target()

    def _show_target(self) -> None:
        """The line naming what the plan is for, and that choice highlighted in the picker."""
        target = self.selection.target
        if target is None:
            return
        self.query_one("#target-line", Static).update(describe_target(target))
        picker = self.query_one("#targets", OptionList)
        option_id = target.name if target.source == "catalogue" else THIS_MACHINE
        with contextlib.suppress(OptionDoesNotExist):
            picker.highlighted = picker.get_option_index(option_id)
        self.query_one("#gpu-count", Label).update(f"GPUs: {self.gpu_count}   (+/- to change)")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Plans for the picked hardware."""
        self._pick(event.option_id)

    def _pick(self, option_id: str | None) -> None:
        snapshot = self.selection.hardware
        if option_id == THIS_MACHINE or option_id is None:
            if snapshot is not None:
                self.quant_app.update_selection(target=target_from_snapshot(snapshot), candidate=None)
            return
        try:
            target = target_from_spec(f"{option_id}x{self.gpu_count}")
        except HardwareError as error:
            self.quant_app.show_error("Choosing the GPU to plan for", error)
            return
        self.quant_app.update_selection(target=target, candidate=None)

    def action_count(self, step: int) -> None:
        """Changes how many GPUs of the catalogued model to plan for.

        Args:
            step: +1 or -1.
        """
        self.gpu_count = max(1, min(8, self.gpu_count + step))
        target = self.selection.target
        if target is not None and target.source == "catalogue":
            self._pick(target.name)
        else:
            self._show_selection()

    def action_next(self) -> None:
        """Goes on to the model."""
        self.quant_app.action_go("model")
