"""One safe door to NVIDIA's NVML: lazy thread-safe start-up, shutdown at exit, queries that never raise."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["NVML_OK", "NvmlLibrary", "default_library"]

NVML_OK = "ok"

# NVML answers "not available" for some counters with an all-ones value instead of an error.
_NOT_AVAILABLE_VALUES = frozenset({0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})

# Why nvmlInit failed, by the name of the pynvml error code: one line for the user.
_INIT_FAILURE_REASONS = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "NVML library not found (no NVIDIA driver installed)",
    "NVML_ERROR_DRIVER_NOT_LOADED": "no NVIDIA driver loaded",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": (
        "NVIDIA driver and NVML library versions differ (reboot after the driver upgrade)"
    ),
    "NVML_ERROR_NO_PERMISSION": "no permission to talk to the NVIDIA driver",
}


@dataclass(frozen=True, slots=True)
class _NvmlState:
    """The outcome of one start-up attempt: the loaded ``pynvml`` module, or why there is none."""

    module: ModuleType | None
    status: str


class NvmlLibrary:
    """NVML, started on first use (once, under a lock) and shut down when the interpreter exits.

    Every NVML call goes through :meth:`query`, which turns a missing library or driver, a missing
    function and any ``NVMLError`` into ``None``, so callers never need a ``try`` around NVML.
    """

    def __init__(self, module_name: str = "pynvml") -> None:
        """Prepare a library handle; nothing is loaded until the first query.

        Args:
            module_name: The Python binding to import (``pynvml`` from nvidia-ml-py).
        """
        self._module_name = module_name
        self._lock = threading.Lock()
        # One attribute, replaced whole, so readers outside the lock never see half an update.
        self._state: _NvmlState | None = None
        self._shutdown_registered = False

    def status(self) -> str:
        """Start NVML if needed; ``"ok"`` when it works, else a one-line reason why no GPU is visible."""
        return self._ensure_started().status

    @property
    def available(self) -> bool:
        """Whether NVML started and can be queried."""
        return self._ensure_started().module is not None

    def query(self, function_name: str, *args: Any) -> Any | None:
        """Call ``pynvml.<function_name>(*args)``; ``None`` when NVML, the function or the value is missing.

        Bytes results are decoded to ``str``, and NVML's all-ones "not available" integers become ``None``.

        Args:
            function_name: The name of a function in ``pynvml``, looked up at call time.
            *args: Its arguments.

        Returns:
            The function's result, or ``None`` when it is not available on this machine.
        """
        module = self._ensure_started().module
        if module is None:
            return None
        function = getattr(module, function_name, None)
        if not callable(function):
            return None  # an older nvidia-ml-py without this function
        try:
            value = function(*args)
        except (module.NVMLError, UnicodeDecodeError):
            return None
        if isinstance(value, bytes):
            return value.decode("utf-8", errors="replace")
        if isinstance(value, int) and value in _NOT_AVAILABLE_VALUES:
            return None
        return value

    def constant(self, name: str) -> Any | None:
        """A constant of the loaded ``pynvml`` (``NVML_TEMPERATURE_GPU`` ...), or ``None`` without NVML."""
        module = self._ensure_started().module
        return None if module is None else getattr(module, name, None)

    def shutdown(self) -> None:
        """Shut NVML down if it was started; the next query starts it again. Never raises."""
        with self._lock:
            state, self._state = self._state, None
        if state is None or state.module is None:
            return
        with contextlib.suppress(state.module.NVMLError):
            state.module.nvmlShutdown()

    def _ensure_started(self) -> _NvmlState:
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                self._state = self._start()
                if self._state.module is not None and not self._shutdown_registered:
                    atexit.register(self.shutdown)
                    self._shutdown_registered = True
            return self._state

    def _start(self) -> _NvmlState:
        try:
            module = importlib.import_module(self._module_name)
        except ImportError:
            return _NvmlState(None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)")
        nvml_error = getattr(module, "NVMLError", None)
        if not isinstance(nvml_error, type) or not issubclass(nvml_error, Exception):
            return _NvmlState(None, f"the installed '{self._module_name}' module is not nvidia-ml-py")
        try:
            module.nvmlInit()
        except nvml_error as error:
            return _NvmlState(None, _describe_init_failure(module, error))
        except (AttributeError, OSError) as error:  # a broken or shadowed binding
            return _NvmlState(None, f"NVML could not be loaded ({error})")
        return _NvmlState(module, NVML_OK)


def _describe_init_failure(module: ModuleType, error: Exception) -> str:
    code = getattr(error, "value", None)
    for constant_name, reason in _INIT_FAILURE_REASONS.items():
        if code is not None and code == getattr(module, constant_name, object()):
            return reason
    return f"NVML failed to start ({error})"


_DEFAULT_LIBRARY = NvmlLibrary()


def default_library() -> NvmlLibrary:
    """The process-wide NVML handle that :mod:`engine.hardware.detect` uses."""
    return _DEFAULT_LIBRARY
