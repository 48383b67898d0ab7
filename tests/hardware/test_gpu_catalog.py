"""Tests for the GPU catalogue: entries, `--gpu` spec parsing and recognising NVML device names."""

from __future__ import annotations

import pytest

from engine.errors import HardwareError
from engine.hardware.gpu_catalog import (
    CATALOG,
    find_gpu,
    match_detected_name,
    normalize_gpu_name,
    parse_gpu_spec,
)

MIB = 2**20

COMPUTE_CAPABILITIES_BY_ARCHITECTURE = {
    "Volta": {(7, 0)},
    "Turing": {(7, 5)},
    "Ampere": {(8, 0), (8, 6)},
    "Ada Lovelace": {(8, 9)},
    "Hopper": {(9, 0)},
    "Blackwell": {(10, 0), (10, 3), (12, 0), (12, 1)},
}

REQUIRED_GPUS = [
    "V100-16GB", "V100-32GB", "T4", "RTX-2080-Ti", "A10", "A10G", "A30", "A40", "A100-40GB",
    "A100-80GB", "RTX-3090", "RTX-A6000", "L4", "L40", "L40S", "RTX-4090", "RTX-6000-Ada",
    "H100-PCIe", "H100-SXM", "H100-NVL", "H200", "GH200", "B200", "B300", "RTX-5090",
    "RTX-PRO-6000-Blackwell",
]  # fmt: skip


def test_catalogue_has_the_required_gpus() -> None:
    names = {model.name for model in CATALOG}
    assert len(CATALOG) >= 24
    assert [name for name in REQUIRED_GPUS if name not in names] == []


def test_names_and_aliases_are_unique_after_normalisation() -> None:
    owner: dict[str, str] = {}
    clashes = []
    for model in CATALOG:
        for spelling in {normalize_gpu_name(s) for s in (model.name, *model.aliases)}:
            if spelling in owner:
                clashes.append((spelling, owner[spelling], model.name))
            owner[spelling] = model.name
    assert clashes == []


@pytest.mark.parametrize("model", CATALOG, ids=lambda model: model.name)
def test_entry_is_consistent(model) -> None:
    assert model.compute_capability in COMPUTE_CAPABILITIES_BY_ARCHITECTURE[model.architecture]
    assert 8 * 2**30 <= model.memory_bytes <= 300 * 2**30
    assert 200 <= model.memory_bandwidth_gbs <= 10_000
    assert model.segment in {"data-centre", "workstation", "consumer"}
    # A catalogue name read back as if NVML reported it resolves to the same entry.
    assert match_detected_name(f"NVIDIA {model.name}") is model


@pytest.mark.parametrize(
    ("name", "memory_mib"),
    [
        ("H100-SXM", 81559),
        ("H100-PCIe", 81559),
        ("H100-NVL", 95830),
        ("H200", 143771),
        ("A100-80GB", 81920),
        ("A100-40GB", 40960),
        ("L40S", 46068),
        ("L4", 23034),
        ("RTX-4090", 24564),
        ("RTX-5090", 32607),
        ("B200", 183359),
        ("B300", 275040),
        ("RTX-PRO-6000-Blackwell", 97887),
    ],
)
def test_memory_is_what_nvml_reports(name: str, memory_mib: int) -> None:
    assert find_gpu(name).memory_bytes == memory_mib * MIB


@pytest.mark.parametrize(
    ("spec", "name", "count"),
    [
        ("H100", "H100-SXM", 1),
        ("h100", "H100-SXM", 1),
        ("H100x2", "H100-SXM", 2),
        ("H100 x 8", "H100-SXM", 8),
        ("H100*4", "H100-SXM", 4),
        ("2xH100", "H100-SXM", 2),
        ("4 x A100", "A100-80GB", 4),
        ("H100-80GB", "H100-SXM", 1),
        ("H100-80GBx4", "H100-SXM", 4),
        ("h100 sxm", "H100-SXM", 1),
        ("H100-PCIe", "H100-PCIe", 1),
        ("h100_nvl", "H100-NVL", 1),
        ("A100", "A100-80GB", 1),
        ("A100-80GBx4", "A100-80GB", 4),
        ("a100 80g", "A100-80GB", 1),
        ("A100-40GB", "A100-40GB", 1),
        ("A100-40Gx2", "A100-40GB", 2),
        ("A10", "A10", 1),
        ("A10G", "A10G", 1),
        ("a10gx2", "A10G", 2),
        ("rtx4090", "RTX-4090", 1),
        ("RTX 4090", "RTX-4090", 1),
        ("rtx4090x2", "RTX-4090", 2),
        ("4090", "RTX-4090", 1),
        ("GeForce RTX 4090", "RTX-4090", 1),
        ("l40s x 2", "L40S", 2),
        ("L40S", "L40S", 1),
        ("L40", "L40", 1),
        ("L4x4", "L4", 4),
        ("Tesla T4", "T4", 1),
        ("t4", "T4", 1),
        ("V100", "V100-32GB", 1),
        ("v100-16gb", "V100-16GB", 1),
        ("rtx pro 6000", "RTX-PRO-6000-Blackwell", 1),
        ("RTX-PRO-6000x8", "RTX-PRO-6000-Blackwell", 8),
        ("rtx-5090", "RTX-5090", 1),
        ("B200x8", "B200", 8),
        ("GB200", "GB200", 1),
        ("GH200", "GH200", 1),
        ("H200", "H200", 1),
        ("  H200x8  ", "H200", 8),
        ("NVIDIA H200", "H200", 1),
    ],
)
def test_parse_gpu_spec(spec: str, name: str, count: int) -> None:
    model, parsed_count = parse_gpu_spec(spec)
    assert (model.name, parsed_count) == (name, count)


@pytest.mark.parametrize(
    ("spec", "in_message"),
    [
        ("", "empty GPU name"),
        ("   ", "empty GPU name"),
        ("H100x0", "GPU count 0"),
        ("0xH100", "GPU count 0"),
        ("H100x5000", "GPU count 5000"),
        ("foo", "unknown GPU 'foo'"),
        ("x2", "unknown GPU 'x2'"),
        ("H100x", "unknown GPU 'H100x'"),
        ("rtx9999", "unknown GPU 'rtx9999'"),
        ("H1000", "did you mean H100-SXM"),
        ("L40SS", "did you mean L40S"),
        ("A100-90GB", "did you mean A100-80GB"),
        ("H1000x2", "did you mean H100-SXM"),
        ("rtx-4900", "RTX-4090"),
        ("MI300X", "quant-tui recommend --list-gpus"),
    ],
)
def test_bad_spec_is_a_one_line_error(spec: str, in_message: str) -> None:
    with pytest.raises(HardwareError) as raised:
        parse_gpu_spec(spec)
    message = str(raised.value)
    assert in_message in message
    assert "\n" not in message


def test_find_gpu_unknown_name_suggests_and_points_at_the_list() -> None:
    with pytest.raises(HardwareError, match=r"unknown GPU 'H10'; did you mean .*H100-SXM.*--list-gpus"):
        find_gpu("H10")


@pytest.mark.parametrize(
    ("nvml_name", "catalogue_name"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H200 NVL", "H200-NVL"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA GH200 120GB", "GH200"),
        ("NVIDIA GH200 144G HBM3e", "GH200-144GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", "A100-80GB"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA A10G", "A10G"),
        ("NVIDIA A30", "A30"),
        ("NVIDIA A40", "A40"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA L40S", "L40S"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100-16GB"),
        ("Tesla V100-PCIE-32GB", "V100-32GB"),
        ("Tesla V100S-PCIE-32GB", "V100-32GB"),
        ("NVIDIA GeForce RTX 2080 Ti", "RTX-2080-Ti"),
        ("GeForce RTX 2080 Ti", "RTX-2080-Ti"),
        ("NVIDIA GeForce RTX 3060", "RTX-3060"),
        ("NVIDIA GeForce RTX 3090", "RTX-3090"),
        ("NVIDIA GeForce RTX 3090 Ti", "RTX-3090"),
        ("NVIDIA RTX A6000", "RTX-A6000"),
        ("NVIDIA GeForce RTX 4080", "RTX-4080"),
        ("NVIDIA GeForce RTX 4080 SUPER", "RTX-4080"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada"),
        ("NVIDIA B200", "B200"),
        ("NVIDIA B300 SXM6 AC", "B300"),
        ("NVIDIA GB200", "GB200"),
        ("NVIDIA GB10", "GB10"),
        ("NVIDIA GeForce RTX 5080", "RTX-5080"),
        ("NVIDIA GeForce RTX 5090", "RTX-5090"),
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX-PRO-6000-Blackwell"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "RTX-PRO-6000-Blackwell"),
        ("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "RTX-PRO-6000-Blackwell"),
    ],
)
def test_match_detected_name(nvml_name: str, catalogue_name: str) -> None:
    model = match_detected_name(nvml_name)
    assert model is not None
    assert model.name == catalogue_name


@pytest.mark.parametrize(
    "nvml_name",
    ["NVIDIA H800", "Quadro RTX 8000", "NVIDIA GeForce GTX 1080 Ti", "Tesla P100-PCIE-16GB", "", "NVIDIA"],
)
def test_unknown_detected_names_match_nothing(nvml_name: str) -> None:
    assert match_detected_name(nvml_name) is None


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("Tesla T4", "t4"),
        ("A100 80G", "a10080gb"),
        ("A100-80GiB", "a10080gb"),
        ("A10G", "a10g"),
        ("NVIDIA H100 80GB HBM3", "h10080gbhbm3"),
        ("RTX-PRO_6000 blackwell", "rtxpro6000blackwell"),
    ],
)
def test_normalize_gpu_name(name: str, key: str) -> None:
    assert normalize_gpu_name(name) == key


# Compute capability from NVIDIA's CUDA GPU list (developer.nvidia.com/cuda-gpus); tensor-core formats
# from NVIDIA's architecture whitepapers and data sheets: INT8 with Turing, BF16 with Ampere, FP8 with
# Ada and Hopper, FP4 (NVFP4/MXFP4) with Blackwell (data-centre and RTX 50 alike); Volta has FP16 only.
# Every catalogue entry is listed, so a new one must be looked up too.
PUBLISHED = {
    # name: (compute capability, fp8, int8, fp4, bf16)
    "V100-16GB": ((7, 0), False, False, False, False),
    "V100-32GB": ((7, 0), False, False, False, False),
    "T4": ((7, 5), False, True, False, False),
    "RTX-2080-Ti": ((7, 5), False, True, False, False),
    "A100-40GB": ((8, 0), False, True, False, True),
    "A100-80GB": ((8, 0), False, True, False, True),
    "A30": ((8, 0), False, True, False, True),
    "A10": ((8, 6), False, True, False, True),
    "A10G": ((8, 6), False, True, False, True),
    "A40": ((8, 6), False, True, False, True),
    "RTX-A6000": ((8, 6), False, True, False, True),
    "RTX-3060": ((8, 6), False, True, False, True),
    "RTX-3090": ((8, 6), False, True, False, True),
    "L4": ((8, 9), True, True, False, True),
    "L40": ((8, 9), True, True, False, True),
    "L40S": ((8, 9), True, True, False, True),
    "RTX-6000-Ada": ((8, 9), True, True, False, True),
    "RTX-4080": ((8, 9), True, True, False, True),
    "RTX-4090": ((8, 9), True, True, False, True),
    "H100-PCIe": ((9, 0), True, True, False, True),
    "H100-SXM": ((9, 0), True, True, False, True),
    "H100-NVL": ((9, 0), True, True, False, True),
    "H200": ((9, 0), True, True, False, True),
    "H200-NVL": ((9, 0), True, True, False, True),
    "GH200": ((9, 0), True, True, False, True),
    "GH200-144GB": ((9, 0), True, True, False, True),
    "B200": ((10, 0), True, True, True, True),
    "GB200": ((10, 0), True, True, True, True),
    "B300": ((10, 3), True, True, True, True),
    "RTX-PRO-6000-Blackwell": ((12, 0), True, True, True, True),
    "RTX-5080": ((12, 0), True, True, True, True),
    "RTX-5090": ((12, 0), True, True, True, True),
    "GB10": ((12, 1), True, True, True, True),
}


def test_every_entry_has_a_published_row() -> None:
    assert sorted(model.name for model in CATALOG) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_compute_capability_and_formats_as_published(name: str) -> None:
    model = find_gpu(name)
    assert model.name == name
    assert (
        model.compute_capability,
        model.fp8_tensor_cores,
        model.int8_tensor_cores,
        model.fp4_tensor_cores,
        model.supports_bf16,
    ) == PUBLISHED[name]
