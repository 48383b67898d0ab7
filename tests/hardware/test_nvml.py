"""Tests for engine.hardware.nvml: NvmlLibrary starts NVML once, lazily, shuts it down once, and normalises results.

The fakes (``tests/hardware/fake_nvml.py``) replace NVML's entry points in nvidia-ml-py's own
module: they return the binding's real structures and raise its real ``NVMLError`` subclasses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from engine.hardware.nvml import NvmlLibrary
from tests.hardware.fake_nvml import FakeNvml, nvml_error


def test_a_foreign_module_is_not_taken_for_nvml() -> None:
    assert NvmlLibrary(module_name="json").status() == "the installed 'json' module is not nvidia-ml-py"


def test_starts_once_across_threads(two_h100: FakeNvml) -> None:
    two_h100.init_delay_s = 0.05
    library = NvmlLibrary()
    start = threading.Barrier(8)
    counts: list[int | None] = []

    def count_gpus() -> None:
        start.wait()
        counts.append(library.query("nvmlDeviceGetCount"))

    threads = [threading.Thread(target=count_gpus) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts == [2] * 8
    assert two_h100.init_calls == 1


def test_shuts_down_at_exit_once_and_restarts_on_demand(two_h100: FakeNvml) -> None:
    library = NvmlLibrary()
    assert two_h100.init_calls == 0  # lazy: nothing happens before the first query
    assert library.query("nvmlDeviceGetCount") == 2
    assert two_h100.atexit_callbacks == [library.shutdown]
    two_h100.atexit_callbacks[0]()
    library.shutdown()
    assert two_h100.shutdown_calls == 1
    assert library.query("nvmlDeviceGetCount") == 2
    assert two_h100.init_calls == 2
    assert two_h100.atexit_callbacks == [library.shutdown]  # registered once per library


def test_shutdown_errors_are_swallowed(two_h100: FakeNvml) -> None:
    library = NvmlLibrary()
    assert library.available
    two_h100.failing["nvmlShutdown"] = nvml_error("NVML_ERROR_UNINITIALIZED")
    library.shutdown()


def _raise_unicode_error() -> str:
    raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (lambda: b"550.54.15", "550.54.15"),
        (lambda: "550.54.15", "550.54.15"),
        (lambda: 42, 42),
        (lambda: 0, 0),
        (lambda: 0xFFFFFFFF, None),  # NVML's "not available" unsigned int
        (lambda: 0xFFFFFFFFFFFFFFFF, None),  # ... and unsigned long long
        (_raise_unicode_error, None),
    ],
)
def test_query_normalises_results(two_h100: FakeNvml, result: Callable[[], Any], expected: Any) -> None:
    two_h100.install("nvmlSystemGetDriverVersion", result)
    assert NvmlLibrary().query("nvmlSystemGetDriverVersion") == expected


def test_query_of_a_function_the_binding_lacks(two_h100: FakeNvml) -> None:
    library = NvmlLibrary()
    assert library.query("nvmlDeviceGetSomethingFromTheFuture", 0) is None
    assert library.query("NVML_TEMPERATURE_GPU") is None  # a constant, not a function
    assert library.constant("NVML_TEMPERATURE_GPU") == pynvml.NVML_TEMPERATURE_GPU


def test_unfaked_functions_raise_real_nvml_errors(two_h100: FakeNvml) -> None:
    # Guards the fakes above: anything not faked fails the way a missing NVML function does.
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        pynvml.nvmlDeviceGetClockInfo(two_h100.handles[0], 0)
    assert NvmlLibrary().query("nvmlDeviceGetClockInfo", two_h100.handles[0], 0) is None
