"""The one server plan: a typed vLLM server configuration, rendered to argv, environment and a shell command.

The planner makes one per candidate; ``recommend`` prints it, the Plan screen shows and copies it,
``quant-tui serve``, the Serve screen and bench start it through the launcher. Each renders the
same object, so what is shown is what runs.
"""

from __future__ import annotations

import ipaddress
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from engine.errors import QuantTuiError
from engine.plan.pipeline_stages import LAYER_PARTITION_ENV

Backend = Literal["cuda", "cpu"]
_GIB = 1024**3
# How a plan shows the program when it is not being run (the launcher puts this interpreter's).
DISPLAY_PROGRAM: dict[str, tuple[str, ...]] = {
    "cpu": ("python", "-m", "vllm.entrypoints.openai.api_server"),
    "cuda": ("vllm", "serve"),
}


@dataclass(frozen=True)
class Prediction:
    """What the plan expects vLLM to report at start-up.

    Attributes:
        kv_cache_tokens: the KV cache size in tokens, as vLLM logs it.
        max_concurrency: requests of ``max_model_len`` tokens that fit at once.
        max_model_len: the request length ``max_concurrency`` is for.
        kv_cache_bytes: memory given to the KV cache (per device).
        weights_bytes: memory of the weights per device; None when not planned.
        kv_bytes_per_token: the plan's KV bytes per token (per device).
        backend: where the plan was made for.
        calibration: a sentence when the figures were corrected from an earlier run.
        computed_kv_cache_tokens: the KV tokens before that correction (what a new calibration
            is measured against).
        calibration_key: the GPU model, vLLM version and architecture a GPU run calibrates.
    """

    kv_cache_tokens: int
    max_concurrency: float
    max_model_len: int
    kv_cache_bytes: int
    weights_bytes: int | None = None
    kv_bytes_per_token: int | None = None
    backend: Backend = "cpu"
    calibration: str | None = None
    computed_kv_cache_tokens: int | None = None
    calibration_key: tuple[str, str, str] | None = None


def check_counts(**values: int | None) -> None:
    """Each option given (not None) is at least 1: one message for recommend, serve and the Plan screen.

    Raises:
        QuantTuiError: ``--<option> must be at least 1, got <value>``.
    """
    for name, value in values.items():
        if value is not None and value < 1:
            raise QuantTuiError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_memory_fraction(value: float | None) -> None:
    """``--gpu-memory-utilization``, when given, is in (0, 1].

    Raises:
        QuantTuiError: it is not, with an example of a value that is.
    """
    if value is not None and not 0 < value <= 1:
        raise QuantTuiError(
            f"--gpu-memory-utilization is a fraction; use a value in (0, 1], e.g. 0.9, not {value:g}"
        )


@dataclass(frozen=True)
class ServerConfig:
    """How to run one vLLM server.

    Attributes:
        model: the model folder (a single-file GGUF model: the file).
        tokenizer: ``--tokenizer`` (``None``: the model's own); a GGUF file's folder, since vLLM's docs
            advise against converting the tokenizer inside the file.
        served_model_name: the name clients use; vLLM's default is the model path.
        host: the address to bind; anything but loopback needs ``allow_remote`` and an ``api_key``.
        port: the port; ``None`` picks a free one.
        dtype: ``--dtype``.
        quantization: ``--quantization`` (``None``: read from the checkpoint).
        kv_cache_dtype: ``--kv-cache-dtype``.
        max_model_len: ``--max-model-len`` (``None``: the model's own).
        gpu_memory_utilization: ``--gpu-memory-utilization`` (``None``: vLLM's default).
        tensor_parallel_size: ``--tensor-parallel-size``.
        pipeline_parallel_size: ``--pipeline-parallel-size``.
        max_num_seqs: ``--max-num-seqs`` (``None``: vLLM's per-hardware default).
        max_num_batched_tokens: ``--max-num-batched-tokens`` (``None``: vLLM's per-hardware default).
        enforce_eager: ``--enforce-eager`` (no graph capture or compilation: faster start-up).
        trust_remote_code: ``--trust-remote-code``: vLLM reads the model's config only through the
            checkpoint's own Python file (``ModelInfo.remote_config``), which this runs.
        api_key: clients must send it as a Bearer token; passed through the environment, never argv.
        cpu_kvcache_gib: KV cache space on the CPU backend; ``None`` lets the launcher plan it
            with the same rule as the planner (``engine.plan.server_plan.cpu_kv_space``).
        extra_args: more vLLM flags, passed through verbatim after the ones above.
        allow_remote: the user asked on purpose to bind a non-loopback address.
        distributed_executor_backend: ``--distributed-executor-backend`` (``"ray"`` to span several
            machines, after ``ray start`` on each as vLLM documents).
        backend: the vLLM build it is for; ``None`` means the one this machine launches.
        prediction: what the plan expects vLLM to report, compared after start-up.
        method: the quantization method of the plan it comes from.
        layer_partition: decoder layers per pipeline stage, given to the server as
            ``VLLM_PP_LAYER_PARTITION`` (None: vLLM's own split).
    """

    model: Path
    tokenizer: str | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    enforce_eager: bool = False
    trust_remote_code: bool = False
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    api_key: str | None = None
    cpu_kvcache_gib: float | None = None
    extra_args: tuple[str, ...] = ()
    allow_remote: bool = False
    distributed_executor_backend: str | None = None
    backend: Backend | None = None
    prediction: Prediction | None = None
    method: str | None = None
    layer_partition: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Callers may pass a str; the frozen dataclass keeps a Path.
        object.__setattr__(self, "model", Path(self.model))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        if self.port is not None and not 1 <= self.port <= 65535:
            raise QuantTuiError(f"port {self.port} is out of range; use a port between 1 and 65535")
        check_memory_fraction(self.gpu_memory_utilization)
        check_counts(
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            pipeline_parallel_size=self.pipeline_parallel_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
        )
        if self.cpu_kvcache_gib is not None and self.cpu_kvcache_gib <= 0:
            raise QuantTuiError("the CPU KV cache space must be more than 0 GiB")
        if not is_loopback(self.host):
            if not self.allow_remote:
                raise QuantTuiError(
                    f"binding {self.host} exposes the server beyond this machine; "
                    "pass the explicit remote option and an API key, or keep 127.0.0.1"
                )
            if not self.api_key:
                raise QuantTuiError(
                    f"binding {self.host} needs an API key; pass --api-key-file FILE (or set $VLLM_API_KEY)"
                )

    @property
    def connect_host(self) -> str:
        """The address a client on this machine uses (a wildcard bind is reached through loopback)."""
        if self.host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    def vllm_args(
        self, backend: Backend | None = None, port: int | None = None, program: tuple[str, ...] | None = None
    ) -> list[str]:
        """The server's argument list.

        Args:
            backend: the build to run (default: ``self.backend``, else the CPU build).
            port: the port to bind; None leaves ``--host``/``--port`` out unless the config names them.
            program: the program to run; None shows the documented one (``python -m ...`` or ``vllm serve``).
        """
        backend = backend or self.backend or "cpu"
        if backend not in ("cuda", "cpu"):
            raise QuantTuiError(f"unknown backend {backend!r}; use cuda or cpu")
        argv = list(program or DISPLAY_PROGRAM[backend])
        argv += ["--model", str(self.model)] if backend == "cpu" else [str(self.model)]
        if self.tokenizer:
            argv += ["--tokenizer", self.tokenizer]
        port = port if port is not None else self.port
        if port is not None or self.host != "127.0.0.1":
            argv += ["--host", self.host]
        if port is not None:
            argv += ["--port", str(port)]
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        if self.dtype != "auto":
            argv += ["--dtype", self.dtype]
        if self.quantization:
            argv += ["--quantization", self.quantization]
        if self.kv_cache_dtype != "auto":
            argv += ["--kv-cache-dtype", self.kv_cache_dtype]
        if self.max_model_len is not None:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.gpu_memory_utilization is not None:
            argv += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.tensor_parallel_size > 1:
            argv += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.pipeline_parallel_size > 1:
            argv += ["--pipeline-parallel-size", str(self.pipeline_parallel_size)]
        if self.distributed_executor_backend:
            argv += ["--distributed-executor-backend", self.distributed_executor_backend]
        if self.max_num_seqs is not None:
            argv += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.max_num_batched_tokens is not None:
            argv += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.enforce_eager:
            argv.append("--enforce-eager")
        if self.trust_remote_code:
            argv.append("--trust-remote-code")
        if (
            backend == "cpu"
            and self.cpu_kvcache_gib is not None
            and not float(self.cpu_kvcache_gib).is_integer()
        ):
            # VLLM_CPU_KVCACHE_SPACE takes whole GiB only; the flag takes bytes.
            argv += ["--kv-cache-memory-bytes", str(math.floor(self.cpu_kvcache_gib * _GIB))]
        argv += list(self.extra_args)
        return argv

    def environment(self, backend: Backend | None = None) -> dict[str, str]:
        """The environment variables the plan sets (not the launcher's own, nor the API key)."""
        backend = backend or self.backend or "cpu"
        env: dict[str, str] = {}
        gib = self.cpu_kvcache_gib
        if backend == "cpu" and gib is not None and float(gib).is_integer():
            env["VLLM_CPU_KVCACHE_SPACE"] = str(int(gib))
        if self.layer_partition is not None:  # vLLM reads the stages' layers from its environment only
            env[LAYER_PARTITION_ENV] = ",".join(map(str, self.layer_partition))
        return env

    def command_line(self, backend: Backend | None = None, port: int | None = None) -> str:
        """The plan as one shell-quoted command: ``VAR=value ... program args``."""
        env = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.environment(backend).items())
        command = shlex.join(self.vllm_args(backend, port))
        return f"{env} {command}" if env else command


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost`` (hostnames are not resolved)."""
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
