"""benchmarks/box_cpu.py: CPU lists as taskset and VLLM_CPU_OMP_THREADS_BIND read them, and the server/client split."""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def box_cpu() -> ModuleType:
    return load_script("box_cpu")


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("2-3", {2, 3}), ("0,2-3", {0, 2, 3}), (" 1 , 4-5", {1, 4, 5})],
)
def test_parse_cpus(box_cpu: ModuleType, text: str, cpus: set[int]) -> None:
    assert box_cpu.parse_cpus(text) == frozenset(cpus)


def test_cpu_list_and_omp_bind(box_cpu: ModuleType) -> None:
    assert box_cpu.cpu_list(frozenset({3, 0, 2})) == "0,2,3"
    assert box_cpu.omp_bind(frozenset({0})) == "0"
    assert box_cpu.omp_bind(frozenset({0, 1, 2})) == "auto"


def test_split_cpus_given_and_overlapping(box_cpu: ModuleType) -> None:
    assert box_cpu.split_cpus("0-2", "3") == (frozenset({0, 1, 2}), frozenset({3}))
    with pytest.raises(ValueError, match="overlap"):
        box_cpu.split_cpus("0-1", "1")


def test_split_cpus_default_gives_the_clients_the_last_cpu(box_cpu: ModuleType) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    split = box_cpu.split_cpus(None, None)
    if len(allowed) == 1:
        assert split is None
    else:
        assert split == (frozenset(allowed[:-1]), frozenset(allowed[-1:]))
