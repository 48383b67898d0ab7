"""A catalogue of NVIDIA GPUs, Volta to Blackwell, for planning a box you are not on; `--gpu` parsing."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from engine.errors import HardwareError

__all__ = [
    "CATALOG",
    "GpuModel",
    "find_gpu",
    "match_detected_name",
    "normalize_gpu_name",
    "parse_gpu_spec",
]

Segment = Literal["data-centre", "workstation", "consumer"]

# The most GPUs one `--gpu NAMExN` may ask for; more is a typo (think "rtx4090" read as "rt" x 4090).
MAX_GPU_COUNT = 1024

# How alike (difflib ratio) a known name must be to a typo to be suggested.
_SUGGESTION_CUTOFF = 0.6


@dataclass(frozen=True, slots=True)
class GpuModel:
    """One GPU model as the planner sees it.

    Attributes:
        name: Canonical catalogue name, e.g. ``"H100-SXM"``.
        aliases: Other spellings accepted by ``--gpu`` (matched case/space/dash-insensitively).
        architecture: ``"Volta"``, ``"Turing"``, ``"Ampere"``, ``"Ada Lovelace"``, ``"Hopper"`` or
            ``"Blackwell"``.
        compute_capability: CUDA compute capability, e.g. ``(9, 0)``.
        memory_bytes: Device memory as NVML reports its total (see the note above ``CATALOG``).
        memory_bandwidth_gbs: Peak memory bandwidth in GB/s (10^9 bytes per second), vendor figure.
        fp8_tensor_cores: FP8 tensor cores (Ada, Hopper, Blackwell: compute capability 8.9 and up).
        int8_tensor_cores: INT8 tensor cores (Turing and later; Volta has FP16 tensor cores only).
        fp4_tensor_cores: FP4 (NVFP4/MXFP4) tensor cores (Blackwell).
        segment: ``"data-centre"``, ``"workstation"`` or ``"consumer"``.
        nvml_name_pattern: Regular expression matched in full against the normalised NVML device name
            (see :func:`normalize_gpu_name`), used to recognise a detected GPU.
    """

    name: str
    aliases: tuple[str, ...]
    architecture: str
    compute_capability: tuple[int, int]
    memory_bytes: int
    memory_bandwidth_gbs: float
    fp8_tensor_cores: bool
    int8_tensor_cores: bool
    fp4_tensor_cores: bool
    segment: Segment
    nvml_name_pattern: str

    @property
    def supports_bf16(self) -> bool:
        """Native BF16 arithmetic (Ampere and later, compute capability 8.0+); older GPUs use FP16."""
        return self.compute_capability >= (8, 0)

    @property
    def memory_gib(self) -> float:
        """Device memory in GiB (2^30 bytes), as NVML-based tools show it."""
        return self.memory_bytes / 2**30


_MIB = 2**20
_GIB = 2**30


def _mib(mebibytes: int) -> int:
    return mebibytes * _MIB


def _gpu(
    name: str,
    architecture: str,
    compute_capability: tuple[int, int],
    memory_bytes: int,
    memory_bandwidth_gbs: float,
    segment: Segment,
    *,
    nvml: str,
    aliases: tuple[str, ...] = (),
) -> GpuModel:
    """Build a catalogue entry; tensor-core support follows from the compute capability."""
    return GpuModel(
        name=name,
        aliases=aliases,
        architecture=architecture,
        compute_capability=compute_capability,
        memory_bytes=memory_bytes,
        memory_bandwidth_gbs=float(memory_bandwidth_gbs),
        fp8_tensor_cores=compute_capability >= (8, 9),
        int8_tensor_cores=compute_capability >= (7, 5),
        fp4_tensor_cores=compute_capability >= (10, 0),
        segment=segment,
        nvml_name_pattern=nvml,
    )


# Memory sizes: the total NVML (and so nvidia-smi) reports for the device, because that is the number
# the planner meets on a real box; each was checked against published nvidia-smi output. It is below
# the marketing size, which is really GiB of DRAM chips: an "80GB" H100 reports 81559 MiB (79.6 GiB),
# a "24GB" RTX 4090 24564 MiB, a "180GB" B200 183359 MiB, and parts with ECC on by default lose more
# (A40/L40S: 46068 MiB of "48GB"; a T4 reports 15109 MiB rather than 15360 with ECC on and older
# drivers). GB10 has no device memory of its own: its entry holds the nominal 128 GiB it shares with
# the CPU. Bandwidth is the vendor's figure for the SXM/full-power variant where a name covers several.
# fmt: off
CATALOG: tuple[GpuModel, ...] = (
    #    name                      architecture    cc       memory (NVML)  GB/s  segment
    # Volta (7.0): FP16 tensor cores only.
    _gpu("V100-16GB",              "Volta",        (7, 0),  _mib(16160),    900, "data-centre",
         nvml=r"v100s?[a-z0-9]*16gb", aliases=("V100-SXM2-16GB", "V100-PCIe-16GB", "V100-16")),
    _gpu("V100-32GB",              "Volta",        (7, 0),  _mib(32510),    900, "data-centre",
         nvml=r"v100s?[a-z0-9]*32gb",
         aliases=("V100", "V100-SXM2-32GB", "V100-PCIe-32GB", "V100S", "V100-32")),
    # Turing (7.5): INT8 tensor cores.
    _gpu("T4",                     "Turing",       (7, 5),  _mib(15360),    320, "data-centre",
         nvml=r"t4", aliases=("T4-16GB",)),
    _gpu("RTX-2080-Ti",            "Turing",       (7, 5),  _mib(11264),    616, "consumer",
         nvml=r"rtx2080ti", aliases=("2080Ti", "RTX-2080Ti")),
    # Ampere: GA100 (8.0), GA10x (8.6).
    _gpu("A100-40GB",              "Ampere",       (8, 0),  _mib(40960),   1555, "data-centre",
         nvml=r"a100[a-z0-9]*40gb[a-z0-9]*", aliases=("A100-SXM4-40GB", "A100-PCIe-40GB", "A100-40")),
    _gpu("A100-80GB",              "Ampere",       (8, 0),  _mib(81920),   2039, "data-centre",
         nvml=r"a100[a-z0-9]*80gb[a-z0-9]*", aliases=("A100", "A100-SXM4-80GB", "A100-PCIe-80GB", "A100-80")),
    _gpu("A30",                    "Ampere",       (8, 0),  _mib(24576),    933, "data-centre",
         nvml=r"a30", aliases=("A30-24GB",)),
    _gpu("A10",                    "Ampere",       (8, 6),  _mib(23028),    600, "data-centre",
         nvml=r"a10", aliases=("A10-24GB",)),
    _gpu("A10G",                   "Ampere",       (8, 6),  _mib(23028),    600, "data-centre",
         nvml=r"a10g", aliases=("A10G-24GB",)),
    _gpu("A40",                    "Ampere",       (8, 6),  _mib(46068),    696, "data-centre",
         nvml=r"a40", aliases=("A40-48GB",)),
    _gpu("RTX-A6000",              "Ampere",       (8, 6),  _mib(49140),    768, "workstation",
         nvml=r"rtxa6000", aliases=("A6000", "RTX-A6000-48GB")),
    _gpu("RTX-3060",               "Ampere",       (8, 6),  _mib(12288),    360, "consumer",
         nvml=r"rtx3060", aliases=("3060", "RTX-3060-12GB")),
    _gpu("RTX-3090",               "Ampere",       (8, 6),  _mib(24576),    936, "consumer",
         nvml=r"rtx3090(ti)?", aliases=("3090", "RTX-3090-Ti", "3090Ti")),
    # Ada Lovelace (8.9): the first FP8 tensor cores.
    _gpu("L4",                     "Ada Lovelace", (8, 9),  _mib(23034),    300, "data-centre",
         nvml=r"l4", aliases=("L4-24GB",)),
    _gpu("L40",                    "Ada Lovelace", (8, 9),  _mib(46068),    864, "data-centre",
         nvml=r"l40", aliases=("L40-48GB",)),
    _gpu("L40S",                   "Ada Lovelace", (8, 9),  _mib(46068),    864, "data-centre",
         nvml=r"l40s", aliases=("L40S-48GB",)),
    _gpu("RTX-6000-Ada",           "Ada Lovelace", (8, 9),  _mib(49140),    960, "workstation",
         nvml=r"rtx6000ada(generation)?", aliases=("RTX6000Ada", "6000Ada", "RTX-6000-Ada-Generation")),
    _gpu("RTX-4080",               "Ada Lovelace", (8, 9),  _mib(16376),    717, "consumer",
         nvml=r"rtx4080(super)?", aliases=("4080", "RTX-4080-Super", "4080Super")),
    _gpu("RTX-4090",               "Ada Lovelace", (8, 9),  _mib(24564),   1008, "consumer",
         nvml=r"rtx4090d?", aliases=("4090", "RTX-4090D", "4090D")),
    # Hopper (9.0).
    _gpu("H100-PCIe",              "Hopper",       (9, 0),  _mib(81559),   2000, "data-centre",
         nvml=r"h100(80gb)?pcie(80gb)?", aliases=("H100-PCIe-80GB",)),
    _gpu("H100-SXM",               "Hopper",       (9, 0),  _mib(81559),   3350, "data-centre",
         nvml=r"h100(80gb)?(hbm3|sxm5?)(80gb)?",
         aliases=("H100", "H100-80GB", "H100-SXM5", "H100-SXM-80GB", "H100-HBM3")),
    _gpu("H100-NVL",               "Hopper",       (9, 0),  _mib(95830),   3900, "data-centre",
         nvml=r"h100nvl", aliases=("H100-NVL-94GB", "H100-94GB")),
    _gpu("H200",                   "Hopper",       (9, 0),  _mib(143771),  4800, "data-centre",
         nvml=r"h200(141gb)?(hbm3e)?", aliases=("H200-141GB", "H200-SXM")),
    _gpu("H200-NVL",               "Hopper",       (9, 0),  _mib(143771),  4800, "data-centre",
         nvml=r"h200nvl", aliases=("H200-NVL-141GB",)),
    # GH200's NVML name carries the Grace CPU's LPDDR5X size ("480GB"); its GPU has 96 GB of HBM3.
    _gpu("GH200",                  "Hopper",       (9, 0),  _mib(97871),   4000, "data-centre",
         nvml=r"gh200(120gb|480gb)?", aliases=("GH200-96GB", "GH200-480GB")),
    _gpu("GH200-144GB",            "Hopper",       (9, 0),  _mib(146831),  4900, "data-centre",
         nvml=r"gh200(624gb|144gb)(hbm3e)?", aliases=("GH200-HBM3e",)),
    # Blackwell: B200/GB200 (10.0), Blackwell Ultra B300 (10.3), RTX 50 / RTX PRO (12.0), GB10 (12.1).
    _gpu("B200",                   "Blackwell",    (10, 0), _mib(183359),  8000, "data-centre",
         nvml=r"b200", aliases=("B200-180GB", "B200-192GB", "HGX-B200")),
    _gpu("GB200",                  "Blackwell",    (10, 0), _mib(189471),  8000, "data-centre",
         nvml=r"gb200", aliases=("GB200-186GB", "GB200-NVL72")),
    _gpu("B300",                   "Blackwell",    (10, 3), _mib(275040),  8000, "data-centre",
         nvml=r"b300[a-z0-9]*", aliases=("B300-288GB", "B300-SXM6", "HGX-B300")),
    _gpu("RTX-PRO-6000-Blackwell", "Blackwell",    (12, 0), _mib(97887),   1792, "workstation",
         nvml=r"rtxpro6000blackwell[a-z0-9]*",
         aliases=("RTX-PRO-6000", "PRO-6000", "RTX-6000-Pro", "RTX-PRO-6000-96GB", "RTX-PRO-6000-Max-Q",
                  "RTX-PRO-6000-Blackwell-Server-Edition", "RTX-PRO-6000-Blackwell-Workstation-Edition")),
    _gpu("RTX-5080",               "Blackwell",    (12, 0), _mib(16303),    960, "consumer",
         nvml=r"rtx5080", aliases=("5080", "RTX-5080-16GB")),
    _gpu("RTX-5090",               "Blackwell",    (12, 0), _mib(32607),   1792, "consumer",
         nvml=r"rtx5090d?", aliases=("5090", "RTX-5090-32GB")),
    # GB10 (DGX Spark) shares 128 GB of LPDDR5X with its CPU; NVML reports no device memory for it.
    _gpu("GB10",                   "Blackwell",    (12, 1), 128 * _GIB,     273, "workstation",
         nvml=r"gb10", aliases=("DGX-Spark", "Spark", "GB10-128GB")),  # memory nominal
)
# fmt: on

# Words that carry no identity in a GPU name ("NVIDIA GeForce RTX 4090", "Tesla T4").
_VENDOR_WORDS = frozenset({"nvidia", "geforce", "tesla", "quadro"})
_MEMORY_SIZE = re.compile(r"(?<=[\s_-])(\d+)\s*(?:gib|gb|g)\b", re.IGNORECASE)
_COUNT_SUFFIX = re.compile(r"^(?P<name>.+)[x×*]\s*(?P<count>\d+)\s*$", re.IGNORECASE)
_COUNT_PREFIX = re.compile(r"^\s*(?P<count>\d+)\s*[x×*](?P<name>.+)$", re.IGNORECASE)


def normalize_gpu_name(name: str) -> str:
    """Reduce a GPU name to a lookup key: lower case, no vendor words, no separators, sizes as ``NNgb``.

    ``"NVIDIA GeForce RTX 4090"`` → ``"rtx4090"``, ``"A100 80G"`` → ``"a10080gb"``, ``"Tesla T4"`` → ``"t4"``.
    """
    with_sizes = _MEMORY_SIZE.sub(lambda match: f"{match.group(1)}gb", name.lower())
    words = re.split(r"[^a-z0-9]+", with_sizes)
    return "".join(word for word in words if word not in _VENDOR_WORDS)


def _build_index() -> dict[str, GpuModel]:
    index: dict[str, GpuModel] = {}
    for model in CATALOG:
        for spelling in (model.name, *model.aliases):
            index.setdefault(normalize_gpu_name(spelling), model)
    return index


def _lookup(name: str) -> GpuModel | None:
    return _build_index().get(normalize_gpu_name(name))


def find_gpu(name: str) -> GpuModel:
    """The catalogue entry for a GPU name or alias (case, space and dash insensitive).

    Raises:
        HardwareError: The name matches no catalogue entry; the message suggests close matches.
    """
    model = _lookup(name)
    if model is None:
        raise HardwareError(_unknown_gpu_message(name, (name,)))
    return model


def parse_gpu_spec(spec: str) -> tuple[GpuModel, int]:
    """Parse a ``--gpu`` value into a catalogue entry and a GPU count.

    Accepts ``"H100"``, ``"H100x2"``, ``"A100-80GBx4"``, ``"rtx4090"``, ``"l40s x 2"``, ``"2xH100"``,
    ``"H100*8"``; the name part is case, space and dash insensitive.

    Raises:
        HardwareError: The spec is empty, names no known GPU, or asks for 0 or absurdly many GPUs.
    """
    text = spec.strip()
    if not text:
        raise HardwareError("empty GPU name; pass e.g. --gpu H100 or --gpu A100-80GBx4")
    whole = _lookup(text)
    if whole is not None:
        return whole, 1
    for pattern in (_COUNT_SUFFIX, _COUNT_PREFIX):
        match = pattern.match(text)
        if match is None:
            continue
        model = _lookup(match.group("name"))
        if model is None:
            continue
        count = int(match.group("count"))
        if not 1 <= count <= MAX_GPU_COUNT:
            raise HardwareError(
                f"GPU count {count} in '{spec.strip()}' is out of range; use 1 to {MAX_GPU_COUNT}, "
                f"e.g. --gpu {model.name}x2"
            )
        return model, count
    # Which part was the name is unclear ("rtx9999" is not "rt" x 9999), so name the whole spec and
    # look for suggestions with and without a count.
    name_parts = [m.group("name") for m in (_COUNT_SUFFIX.match(text), _COUNT_PREFIX.match(text)) if m]
    raise HardwareError(_unknown_gpu_message(text, (text, *name_parts)))


def _unknown_gpu_message(spec: str, candidates: tuple[str, ...]) -> str:
    index = _build_index()
    wanted = [normalize_gpu_name(candidate) for candidate in candidates]
    scored = sorted(
        ((max(difflib.SequenceMatcher(None, want, key).ratio() for want in wanted), key) for key in index),
        reverse=True,
    )
    close = [index[key].name for score, key in scored if score >= _SUGGESTION_CUTOFF]
    suggestions = list(dict.fromkeys(close))[:3]
    hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
    return (
        f"unknown GPU '{spec.strip()}'{hint} (run `quant-tui recommend --list-gpus` "
        f"to see the {len(CATALOG)} known GPUs)"
    )


def match_detected_name(nvml_name: str) -> GpuModel | None:
    """The catalogue entry for a name NVML reports (``"NVIDIA H100 80GB HBM3"`` → H100-SXM), if any."""
    key = normalize_gpu_name(nvml_name)
    for model in CATALOG:
        if re.fullmatch(model.nvml_name_pattern, key):
            return model
    return _lookup(nvml_name)
