"""Why a vLLM server failed to start, and the fix, read from its log."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from engine.serve.log_line import strip_log_prefix

__all__ = ["Diagnosis", "diagnose_failure", "is_root_exception"]


@dataclass(frozen=True)
class Diagnosis:
    """Why a server did not start, and what to do about it (one or two plain lines)."""

    cause: str
    fix: str


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Diagnosis]]


def _kv_too_small(match: re.Match[str]) -> Diagnosis:
    fits = match["fits"]
    shorter = f"--max-model-len {fits} (what fits)" if fits else "a smaller --max-model-len"
    sizes = ""
    if float(match["need"]) > 0:  # vLLM rounds to 0.01 GiB: tiny caches read "0.0"
        sizes = f": {match['need']} GiB needed, {match['have']} GiB available"
    return Diagnosis(
        f"the KV cache is too small for the max length of {match['len']} tokens{sizes}",
        f"use {shorter}, give the KV cache more memory (--gpu-memory-utilization on GPU, "
        "--cpu-kvcache-gib / VLLM_CPU_KVCACHE_SPACE on CPU) or --kv-cache-dtype fp8",
    )


def _longer_than_model(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"--max-model-len {match['asked']} is longer than the model supports ({match['limit']} tokens)",
        f"use --max-model-len {match['limit']} or less",
    )


def _cpu_kv_over_ram(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"out of memory: the CPU KV cache asks for {match['asked']} GiB but only {match['free']} GiB of RAM is free",
        "give a smaller CPU KV cache space (--cpu-kvcache-gib / VLLM_CPU_KVCACHE_SPACE) or free some RAM",
    )


def _cpu_util_over_ram(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"out of memory: only {match['free']} GiB of RAM is free, less than --gpu-memory-utilization reserves",
        "lower --gpu-memory-utilization (it sets the RAM share on CPU) or free some RAM",
    )


def _port_taken(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the port is already in use by another program",
        "pick another --port, or leave --port out to use a free one",
    )


def _missing_module(match: re.Match[str]) -> Diagnosis:
    module = match["module"].split(".")[0]
    return Diagnosis(
        f"a Python package the server needs is missing (module '{match['module']}')",
        f"install it into the same environment as vLLM (pip install {module}) and start again",
    )


def _please_install(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"a package the server needs is missing: {match['what'].strip().rstrip('.')}",
        f"pip install {match['pkg']} into the same environment as vLLM and start again",
    )


def _quant_not_on_platform(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"{match['method']} quantization is not supported on this hardware ({match['device']})",
        "serve a checkpoint quantized ahead of time (quant-tui quantize) or drop --quantization",
    )


def _quant_capability(match: re.Match[str]) -> Diagnosis:
    need, have = int(match["need"]), int(match["have"])
    return Diagnosis(
        f"{match['method']} needs a GPU of compute capability {need // 10}.{need % 10}; "
        f"this one is {have // 10}.{have % 10}",
        "pick a method this GPU supports (quant-tui recommend lists them), e.g. w4a16 or int8-w8a8",
    )


def _quant_mismatch(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"the checkpoint is already quantized as {match['ckpt']}, not {match['asked']}",
        "drop --quantization (vLLM reads it from the checkpoint)",
    )


def _unknown_quant(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"vLLM does not know the quantization method {match['method']!r}",
        "check the spelling of --quantization, or drop it to use the checkpoint's own",
    )


def _no_kv_memory(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "out of memory: no memory is left for the KV cache",
        "give the KV cache more memory (--gpu-memory-utilization on GPU, --cpu-kvcache-gib / "
        "VLLM_CPU_KVCACHE_SPACE on CPU), or serve a smaller or quantized model",
    )


def _gpu_oom(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "out of GPU memory while loading or warming up the model",
        "serve a quantized or smaller model, lower --max-model-len, or add GPUs (--tensor-parallel-size)",
    )


def _no_such_folder(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"the model folder {match['path']} does not exist (vLLM took it for a Hub repo id)",
        "pass an existing model folder",
    )


def _bad_folder(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the model folder is not a usable Hugging Face model (no readable config.json)",
        "pass the folder that holds config.json and the *.safetensors weights",
    )


def _missing_kernel(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"this vLLM build has no {match['op'] or match['stub']} kernel on this hardware, so the model's quantization cannot run here",
        "serve another quantization method (quant-tui recommend lists what runs here) or the unquantized model",
    )


def _bad_config(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the model's config.json is not valid JSON",
        "fix or re-create config.json in the model folder",
    )


def _remote_config(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "vLLM can read this model's config only by running the checkpoint's own Python file (auto_map)",
        "read that file in the model folder, then serve with --trust-remote-code (after -- for quant-tui serve)",
    )


def _no_weights(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        "the model folder has no weights vLLM can load",
        "put the model's *.safetensors (or *.bin) files in the folder",
    )


def _unsupported_arch(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"vLLM does not support the model architecture {match['arch']}",
        "serve a model with an architecture this vLLM supports, or upgrade vLLM",
    )


def _bad_argument(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"vLLM rejected its arguments: {match['msg'].strip()}",
        "check the extra vLLM flags passed after --",
    )


def _max_len_for_device(match: re.Match[str]) -> Diagnosis:
    return Diagnosis(
        f"--max-model-len {match['asked']} is not allowed here: {match['why'].strip()}",
        "use a smaller --max-model-len",
    )


_WORKER_SIGNALS = {
    4: (
        "an illegal instruction, SIGILL",
        "a vLLM CPU kernel ran an instruction this process may not use; on an Intel AMX host run `bash scripts/bootstrap.sh` so quant-tui's AMX plugin is installed next to vLLM, or serve without --enforce-eager",
    ),
    6: ("an abort, SIGABRT", "restart the server; the server log has the native error that aborted it"),
    7: (
        "a bus error, SIGBUS",
        "free space in /dev/shm (vLLM passes tensors through it), then restart the server",
    ),
    9: (
        "SIGKILL, most likely the out-of-memory killer",
        "free some RAM, or serve a smaller or quantized model with a smaller KV cache",
    ),
    11: (
        "a segmentation fault, SIGSEGV",
        "restart the server; if it happens again, report it to vLLM with the server log",
    ),
}


def _engine_died(match: re.Match[str]) -> Diagnosis:
    code = match["code"]
    if code.lstrip("-").isdigit() and int(code) < 0 and -int(code) in _WORKER_SIGNALS:
        how, fix = _WORKER_SIGNALS[-int(code)]
        return Diagnosis(f"the vLLM engine process died ({how})", fix)
    detail = f"signal {-int(code)}" if code.startswith("-") else f"exit status {code}"
    return Diagnosis(
        f"the vLLM engine process died ({detail})",
        "restart the server; the server log has the error that ended the engine",
    )


# First match wins, so the specific rules come before the general ones.
_RULES: Sequence[_Rule] = (
    (
        re.compile(
            r"max seq len \((?P<len>\d+)\), \((?P<need>[\d.]+) GiB KV cache is needed, which is larger than "
            r"the available KV cache memory \((?P<have>[\d.]+) GiB\)\.(?: Based on the available memory, "
            r"the estimated maximum model length is (?P<fits>\d+)\.)?"
        ),
        _kv_too_small,
    ),
    (
        re.compile(
            r"User-specified max_model_len \((?P<asked>\d+)\) is greater than the derived max_model_len "
            r"\(\w+=(?P<limit>\d+)"
        ),
        _longer_than_model,
    ),
    (
        re.compile(
            r"Available memory on node \d+ \((?P<free>[\d.]+)/[\d.]+ GiB\) on kv cache allocation is less than "
            r"requested memory for kv \((?P<asked>[\d.]+)"
        ),
        _cpu_kv_over_ram,
    ),
    (
        re.compile(
            r"Available memory on node \d+ \((?P<free>[\d.]+)/[\d.]+ GiB\) on startup is less than desired CPU"
        ),
        _cpu_util_over_ram,
    ),
    (re.compile(r"No available memory for the cache blocks"), _no_kv_memory),
    (re.compile(r"\[Errno 98\]|Address already in use|address already in use"), _port_taken),
    (
        re.compile(r"(?P<method>[\w-]+) quantization is currently not supported in (?P<device>\w+)"),
        _quant_not_on_platform,
    ),
    (
        re.compile(
            r"quantization method (?P<method>[\w-]+) is not supported for the current GPU\. Minimum "
            r"capability: (?P<need>\d+)\. Current capability: (?P<have>\d+)"
        ),
        _quant_capability,
    ),
    (
        re.compile(
            r"Quantization method specified in the model config \((?P<ckpt>[\w-]+)\) does not match the "
            r"quantization method specified in the `quantization` argument \((?P<asked>[\w-]+)\)"
        ),
        _quant_mismatch,
    ),
    (re.compile(r"Unknown quantization method: (?P<method>[\w-]+)"), _unknown_quant),
    (
        re.compile(
            r"CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError|not enough GPU memory|"
            r"HIP out of memory"
        ),
        _gpu_oom,
    ),
    # The CPU build either lacks the op or registers it as a stub that takes no arguments.
    (
        re.compile(
            r"'_C' object has no attribute '(?P<op>\w+)'|_C::(?P<stub>\w+)\(\) expected at most 0 argument"
        ),
        _missing_kernel,
    ),
    (re.compile(r"ModuleNotFoundError: No module named '(?P<module>[\w.]+)'"), _missing_module),
    (
        re.compile(
            r"(?P<what>[^:]*?)[Pp]lease install (?:it with |with )?`?(?:pip install )?(?P<pkg>[\w.\-\[\]>=<]+)"
        ),
        _please_install,
    ),
    (re.compile(r"Model architectures \[(?P<arch>[^\]]*)\] are not supported"), _unsupported_arch),
    (re.compile(r"Cannot find any model weights"), _no_weights),
    # vLLM's own sentence, or transformers 5's that vLLM passes on.
    (re.compile(r"--trust-remote-code` flag|contains custom code which must be executed"), _remote_config),
    (
        re.compile(
            r"JSONDecodeError|config\.json.*(?:is not a valid JSON|Expecting)|Expecting property name"
        ),
        _bad_config,
    ),
    (
        re.compile(
            r"does not appear to have a file named config\.json|Invalid repository ID or local directory|"
            r"No config file found|Can't load the configuration|is not a local folder and is not a valid model"
            r"|Unrecognized model in"
        ),
        _bad_folder,
    ),
    (
        re.compile(r"Repo id must be in the form 'repo_name' or 'namespace/repo_name': '(?P<path>/[^']*)'"),
        _no_such_folder,
    ),
    (re.compile(r"(?:api_server\.py|vllm serve|vllm): error: (?P<msg>.+)"), _bad_argument),
    (re.compile(r"max_model_len \((?P<asked>\d+)\)(?P<why>.*exceeds.*)"), _max_len_for_device),
    # Last: a failed start-up also ends its worker, and the rules above name that cause better.
    (re.compile(r"Worker proc \S+ died unexpectedly \(exit code: (?P<code>-?\d+|None)\)"), _engine_died),
)

_NOT_ERRORS = frozenset({"DEBUG", "INFO", "WARNING"})
_ENGINE_CORE_GONE = "engine core exited unexpectedly"
_EXCEPTION = re.compile(r"^(?P<type>(?:[\w.]+\.)?\w*(?:Error|Exception)): (?P<msg>.+)$")
# Exceptions that only say "something failed elsewhere": the root cause is an earlier line.
_WRAPPERS = re.compile(
    r"EngineDeadError|Engine core initialization failed|Worker failed with error|See (?:the )?(?:stack trace|root cause)"
)


def is_root_exception(message: str) -> bool:
    """Whether a log message is an exception line that is not just a wrapper pointing elsewhere."""
    return bool(_EXCEPTION.match(message.strip())) and not _WRAPPERS.search(message)


def diagnose_failure(lines: Iterable[str], returncode: int | None) -> Diagnosis | None:
    """Names why a server failed to start and the fix, from its log; ``None`` when nothing explains it.

    Args:
        lines: the log (the tail is enough when it holds the error).
        returncode: the server's exit status (negative: killed by that signal), ``None`` if it still runs.
    """
    # Only error lines and raw stderr (tracebacks) count: warnings mention errors that did not happen
    # (e.g. "Address already in use. Retrying with a new port.").
    lines_list = list(lines)
    messages = [message for level, message in map(strip_log_prefix, lines_list) if level not in _NOT_ERRORS]
    for pattern, explain in _RULES:
        for message in messages:
            if match := pattern.search(message):
                return explain(match)
    # vLLM logs a killed engine core only as a warning, then shuts the API server down.
    if any(_ENGINE_CORE_GONE in line for line in lines_list):
        return Diagnosis(
            "the vLLM engine process died unexpectedly (killed from outside, often by the out-of-memory killer)",
            "look for an OOM kill in `dmesg`; free some RAM or serve a smaller model or KV cache, then restart",
        )
    if returncode in (-9, 137):
        return Diagnosis(
            "the server was killed (SIGKILL), most likely by the system's out-of-memory killer",
            "free some RAM, or serve a smaller or quantized model with a smaller KV cache",
        )
    # Before the exception rule: vLLM turns SIGTERM into KeyboardInterrupt("terminated"), an effect.
    if returncode is not None and returncode < 0:
        return Diagnosis(
            f"the server was ended by {_signal_name(-returncode)} from outside quant-tui "
            "(a session or container stop, a memory monitor, another tool)",
            "see what else ends processes on this machine (`dmesg`, `journalctl`), then start it again",
        )
    # Otherwise the first exception that is not a wrapper is the root cause the log shows.
    for message in messages:
        if (match := _EXCEPTION.match(message.strip())) and not _WRAPPERS.search(message):
            return Diagnosis(
                f"{match['type'].rsplit('.', 1)[-1]}: {_shorten(match['msg'])}",
                "see the server log for the full trace",
            )
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _shorten(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
