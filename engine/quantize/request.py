"""What a quantization run is asked to do, what it reports while running, and what it reports at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.plan.methods import method, names, quantizable

# Data-free methods first (written by quant-tui itself), then the calibrated ones (llm-compressor);
# all derived from the method registry.
METHODS: tuple[str, ...] = quantizable()
DATA_FREE_METHODS: tuple[str, ...] = names("data-free")
CALIBRATED_METHODS: tuple[str, ...] = names("llm-compressor")

# The suffix llm-compressor's examples give the output folder, e.g. Llama-3-8B-FP8-Dynamic.
# --kv-cache-scheme values: llm-compressor's calibrated KV cache schemes that vLLM reads with
# --kv-cache-dtype of the same name.
KV_CACHE_SCHEMES: tuple[str, ...] = ("fp8",)
# Calibration samples a calibrated run reads when the request names no number (llm-compressor's examples use 512).
DEFAULT_CALIBRATION_SAMPLES = 128

FOLDER_SUFFIXES: dict[str, str] = {name: method(name).folder_suffix or name.upper() for name in METHODS}


@dataclass(frozen=True)
class QuantizeRequest:
    """One quantization run.

    Attributes:
        source: the model folder (config.json and safetensors weights).
        method: one of METHODS.
        output: the folder to create; None picks ``default_output_dir(source, method)``.
        ignore: extra Linear layers to leave unquantized: module names, shell globs
            (``*.down_proj``) or ``re:`` regular expressions, as compressed-tensors writes them.
        calibration: a text or JSONL file of calibration samples (calibrated methods only).
        workers: threads quantizing in parallel; None uses the CPU count (at most 8).
        kv_cache_scheme: one of KV_CACHE_SCHEMES to also calibrate KV cache scales (calibrated
            methods only), or None.
        calibration_samples: how many calibration samples to read; None is DEFAULT_CALIBRATION_SAMPLES.
        device: where a data-free run computes: "cpu", "cuda", or "auto" (cuda when torch sees a
            CUDA GPU); the bits written are the same on either.
    """

    source: Path
    method: str
    output: Path | None = None
    ignore: tuple[str, ...] = ()
    calibration: Path | None = None
    workers: int | None = None
    kv_cache_scheme: str | None = None
    calibration_samples: int | None = None
    device: str = "auto"

    @property
    def samples(self) -> int:
        """The number of calibration samples the run reads."""
        return self.calibration_samples or DEFAULT_CALIBRATION_SAMPLES


@dataclass(frozen=True)
class QuantizeProgress:
    """A snapshot of a running quantization, sent to the progress callback.

    Attributes:
        tensors_done: input tensors fully written.
        tensors_total: input tensors in the model.
        bytes_done: input bytes processed so far.
        bytes_total: input bytes in the model.
        rate_bytes_per_s: input bytes processed per second since the start.
        eta_s: estimated seconds left, None until there is a rate.
        current_tensor: the tensor being worked on.
        peak_rss_bytes: the highest resident memory of this process seen during the run.
        stage: "preflight", "planning", "quantizing", "finishing", "calibrating", "installing" or "done".
        message: a human sentence about the stage, when there is one.
    """

    tensors_done: int
    tensors_total: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_s: float
    eta_s: float | None
    current_tensor: str
    peak_rss_bytes: int
    stage: str
    message: str = ""


@dataclass(frozen=True)
class LayerError:
    """How far a layer's dequantized weight is from the original.

    Attributes:
        name: the module name, e.g. ``model.layers.0.mlp.down_proj``.
        relative_error: ``||W - dequant(quant(W))|| / ||W||`` (Frobenius norms).
        snr_db: signal-to-noise ratio of the dequantized weight, ``-20 log10(relative_error)``.
    """

    name: str
    relative_error: float
    snr_db: float


@dataclass(frozen=True)
class QuantizeReport:
    """The result of a finished run.

    Attributes:
        layer_errors: every quantized layer, worst (highest relative error) first; empty when
            the quantizer does not expose the weights (calibrated methods).
        kv_cache_scheme: the KV cache scheme whose calibrated scales the checkpoint holds, or None;
            serve it with ``--kv-cache-dtype`` of the same name.
        device: where a data-free run computed (``cpu``, ``cuda:0 (NVIDIA ...)``).
        peak_gpu_bytes: torch's peak GPU allocation during a run on a GPU; 0 on the CPU.
    """

    source: Path
    output: Path
    method: str
    input_bytes: int
    output_bytes: int
    tensors_quantized: int
    tensors_copied: int
    seconds: float
    peak_rss_bytes: int
    layer_errors: tuple[LayerError, ...]
    kv_cache_scheme: str | None = None
    device: str = "cpu"
    peak_gpu_bytes: int = 0

    @property
    def ratio(self) -> float:
        """Input size divided by output size (how many times smaller the weights got)."""
        return self.input_bytes / self.output_bytes if self.output_bytes else 0.0


ProgressCallback = Callable[[QuantizeProgress], None]


def stage_progress(stage: str, message: str = "", peak_rss_bytes: int = 0) -> QuantizeProgress:
    """A progress snapshot that only names a stage (installing, calibrating...), without tensor counts."""
    return QuantizeProgress(
        tensors_done=0,
        tensors_total=0,
        bytes_done=0,
        bytes_total=0,
        rate_bytes_per_s=0.0,
        eta_s=None,
        current_tensor="",
        peak_rss_bytes=peak_rss_bytes,
        stage=stage,
        message=message,
    )
