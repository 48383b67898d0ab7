"""PlanSettingsDialog: the planning options `recommend` and `serve` take, typed in on the Plan screen, validated as the CLI does."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Static

from engine.errors import QuantTuiError
from engine.plan.plan_request import PlanRequest
from tui.cli.plan_options import PLAN_OPTIONS, PlanOption, read_option


class OptionValidator(Validator):
    """Checks one option's text as the CLI does: its reader, then PlanRequest's own checks (empty is the default)."""

    def __init__(self, option: PlanOption, request: PlanRequest) -> None:
        """Validates text for ``option``, as a change to ``request``."""
        super().__init__()
        self.option = option
        self.request = request

    def validate(self, value: str) -> ValidationResult:
        """A failure with the CLI's one-line message, or success."""
        text = value.strip()
        if not text:
            return self.success()
        try:
            change: dict[str, Any] = {self.option.field: read_option(self.option, text)}
            replace(self.request, **change)  # PlanRequest checks its values as it is made
        except QuantTuiError as error:
            return self.failure(str(error))
        return self.success()


def shown_value(request: PlanRequest, option: PlanOption) -> str:
    """The request's value for ``option`` as the field shows it ("" for vLLM's or the planner's default)."""
    value = getattr(request, option.field)
    if value is None or (option.default is not None and str(value) == option.default):
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_summary(request: PlanRequest) -> str:
    """The options set beyond the defaults, as flags (``--max-num-seqs 64 --dtype float32``); "" when none."""
    return " ".join(
        f"{option.flag} {text}" for option in PLAN_OPTIONS if (text := shown_value(request, option))
    )


class PlanSettingsDialog(ModalScreen[PlanRequest | None]):
    """Every planning option as a field; returns the new request, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", tooltip="Close without changing the plan"),
        Binding("ctrl+s", "apply", "Apply", tooltip="Re-plan with these settings"),
    ]

    DEFAULT_CSS = """
    PlanSettingsDialog {
        align: center middle;
    }
    PlanSettingsDialog > Vertical {
        width: 76;
        max-width: 98%;
        height: auto;
        border: thick $primary;
        background: $surface;
        padding: 0 1;
    }
    PlanSettingsDialog .title {
        text-style: bold;
    }
    PlanSettingsDialog .row {
        height: 1;
    }
    PlanSettingsDialog .row Label {
        width: 26;
    }
    PlanSettingsDialog .row Input {
        width: 1fr;
        height: 1;
        border: none;
        padding: 0 1;
    }
    PlanSettingsDialog .row Input.-invalid {
        background: $error 30%;
    }
    PlanSettingsDialog #settings-error {
        color: $error;
        height: auto;
    }
    PlanSettingsDialog Horizontal.buttons {
        height: auto;
    }
    PlanSettingsDialog Button {
        margin-right: 2;
    }
    """

    def __init__(self, request: PlanRequest) -> None:
        """Opens on the Plan screen's current request."""
        super().__init__()
        self.request = request

    def compose(self) -> ComposeResult:
        """One row per planning option (flag, field), the error line and the two buttons."""
        with Vertical():
            yield Static(
                "vLLM serving options (as `quant-tui serve` takes them; empty = default)", classes="title"
            )
            for option in PLAN_OPTIONS:
                with Horizontal(classes="row"):
                    yield Label(option.flag)
                    yield Input(
                        shown_value(self.request, option),
                        placeholder="|".join(option.choices)
                        if option.choices
                        else option.help.split(" (")[0],
                        validators=[OptionValidator(option, self.request)],
                        suggester=SuggestFromList(option.choices) if option.choices else None,
                        id=f"option-{option.field}",
                        tooltip=option.help.replace("%%", "%"),
                    )
            yield Static("", id="settings-error")
            with Horizontal(classes="buttons"):
                yield Button("Re-plan", variant="primary", id="apply")
                yield Button("Cancel", id="cancel")

    def planned_request(self) -> PlanRequest:
        """The request the fields ask for.

        Raises:
            QuantTuiError: a field's value is not valid, or the values do not go together.
        """
        values: dict[str, Any] = {}
        for option in PLAN_OPTIONS:
            field = self.query_one(f"#option-{option.field}", Input)
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                raise QuantTuiError(result.failure_descriptions[0])
            text = field.value.strip() or option.default
            values[option.field] = read_option(option, text) if text is not None else None
        return replace(self.request, **values)

    @on(Button.Pressed, "#apply")
    @on(Input.Submitted)
    def action_apply(self) -> None:
        """Returns the new request, or says in one line what is wrong with it."""
        try:
            request = self.planned_request()
        except QuantTuiError as error:
            self.query_one("#settings-error", Static).update(str(error))
            return
        self.dismiss(request)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        """Closes without a change."""
        self.dismiss(None)
