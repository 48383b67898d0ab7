"""engine/plan/multi_node: whether vLLM started here would join a Ray cluster, and where Ray keeps its address."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan.multi_node import ray_cluster_problem, ray_temp_dir


@pytest.mark.parametrize(
    ("environ", "folder"),
    [
        ({"RAY_TMPDIR": "/scratch", "TMPDIR": "/var/tmp"}, "/scratch/ray"),
        ({"TMPDIR": "/var/tmp"}, "/var/tmp/ray"),
        ({}, "/tmp/ray"),
    ],
)
def test_ray_temp_dir_follows_rays_own_order(environ: dict[str, str], folder: str) -> None:
    assert ray_temp_dir(environ) == Path(folder)


# (Ray importable, $RAY_ADDRESS, `ray start` left its address file here) -> the words of the problem, or None.
CASES = [
    (False, "10.0.0.1:6379", True, "Ray is not installed"),
    (True, "10.0.0.1:6379", False, None),  # ray.init() joins $RAY_ADDRESS
    (True, "", True, None),  # ray.init() joins the cluster `ray start` started or joined here
    (True, "", False, "no Ray cluster is reachable"),  # ray.init() would start a one-box instance
]


@pytest.mark.parametrize(("installed", "address", "started", "problem"), CASES)
def test_a_ray_cluster_is_reachable_only_where_ray_init_would_join_one(
    tmp_path: Path, installed: bool, address: str, started: bool, problem: str | None
) -> None:
    environ = {"RAY_TMPDIR": str(tmp_path)}
    if address:
        environ["RAY_ADDRESS"] = address
    if started:
        (tmp_path / "ray").mkdir()
        (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.1:6379\n")
    found = ray_cluster_problem(environ, ray_installed=installed)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
