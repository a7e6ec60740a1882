"""The default number of llama.cpp CPU threads: computed from the usable physical cores, not
every core (issue 16, point 1); ``engine.n_threads`` overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.caption.engine import native
from pipeline.caption.engine.native import default_threads, usable_cores


def fake_sysfs(root: Path, cores_of_cpu: dict[int, tuple[int, int]], cpu_max: str | None = None) -> Path:
    """A sysfs copy with each CPU's (package, core) and, optionally, a cgroup v2 ``cpu.max``."""
    for cpu, (package, core) in cores_of_cpu.items():
        topology = root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    if cpu_max is not None:
        (root / "fs" / "cgroup").mkdir(parents=True)
        (root / "fs" / "cgroup" / "cpu.max").write_text(cpu_max + "\n")
    return root


def test_hyper_threads_of_one_core_count_once(tmp_path: Path) -> None:
    # 2 packages x 2 cores x 2 hyper-threads.
    layout = {cpu: (cpu // 4, cpu % 2) for cpu in range(8)}
    root = fake_sysfs(tmp_path, layout)
    assert usable_cores(range(8), root) == 4
    assert usable_cores([0, 2], root) == 1  # two hyper-threads of core 0 of package 0
    assert usable_cores([0, 1, 4], root) == 3


def test_a_container_quota_caps_the_cores(tmp_path: Path) -> None:
    root = fake_sysfs(tmp_path, {cpu: (0, cpu) for cpu in range(16)}, cpu_max="250000 100000")
    assert usable_cores(range(16), root) == 3  # 2.5 CPUs, rounded up
    unlimited = fake_sysfs(tmp_path / "free", {cpu: (0, cpu) for cpu in range(16)}, cpu_max="max 100000")
    assert usable_cores(range(16), unlimited) == 16


def test_unreadable_topology_counts_each_cpu(tmp_path: Path) -> None:
    assert usable_cores(range(6), tmp_path / "nothing") == 6


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_default_leaves_a_core_to_the_pipeline(monkeypatch: pytest.MonkeyPatch, cores: int, threads: int) -> None:
    monkeypatch.setattr(native, "usable_cores", lambda: cores)
    assert default_threads(None) == threads
    assert default_threads(7) == 7  # engine.n_threads wins
