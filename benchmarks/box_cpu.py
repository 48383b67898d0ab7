"""Separate CPUs for a vLLM server and its benchmark clients, and who used the box's CPU during a run."""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

# Other processes' CPU (cores, averaged over a timed run) above which a run measured a busy box.
BUSY_CORES = 0.10


def parse_cpus(text: str) -> frozenset[int]:
    """``"0"``, ``"2-3"``, ``"0,2-3"`` -> the CPU ids."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


def split_cpus(server: str | None, clients: str | None) -> tuple[frozenset[int], frozenset[int]] | None:
    """The server's and the clients' CPUs: the given ones, else the last allowed CPU for the clients
    (one asyncio client runs at a time) and the others for the server; ``None`` on a one-CPU box."""
    allowed = sorted(os.sched_getaffinity(0))
    client_cpus = parse_cpus(clients) if clients else frozenset(allowed[-1:])
    server_cpus = parse_cpus(server) if server else frozenset(allowed) - client_cpus
    if not server_cpus or not client_cpus:
        return None
    if server_cpus & client_cpus:
        raise ValueError(f"the server's CPUs {sorted(server_cpus)} and the clients' overlap")
    return server_cpus, client_cpus


def cpu_list(cpus: frozenset[int]) -> str:
    """The CPUs as ``0,2,3`` (the form VLLM_CPU_OMP_THREADS_BIND and taskset read)."""
    return ",".join(str(cpu) for cpu in sorted(cpus))


def omp_bind(cpus: frozenset[int]) -> str:
    """The VLLM_CPU_OMP_THREADS_BIND for a server on ``cpus``.

    One CPU is named (vLLM's ``auto`` would also end there, after a warning that it has no CPU left to
    reserve for its scheduler); with more, ``auto`` keeps one of them for the API server and engine core,
    as vLLM does on a whole box (vllm/utils/ompmultiprocessing.py).
    """
    return cpu_list(cpus) if len(cpus) == 1 else "auto"


@contextlib.contextmanager
def server_affinity(cpus: frozenset[int]) -> Iterator[None]:
    """Processes started in the block run on ``cpus`` (they inherit this thread's mask), and vLLM's worker
    binds its OpenMP threads there (:func:`omp_bind`)."""
    saved_mask = os.sched_getaffinity(0)
    saved_bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND")
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = omp_bind(cpus)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved_mask)
        if saved_bind is None:
            os.environ.pop("VLLM_CPU_OMP_THREADS_BIND", None)
        else:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = saved_bind


def move_this_process(cpus: frozenset[int]) -> None:
    """Every thread of this process onto ``cpus``; the clients it starts from now on inherit them."""
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task), cpus)


def tree_cpus(pid: int) -> tuple[int, int, frozenset[int]]:
    """``(processes, threads, the union of their CPU masks)`` of the process ``pid`` and its descendants."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    threads, cpus = 0, set()
    for process in processes:
        for thread in process.threads():
            with contextlib.suppress(OSError):
                cpus.update(os.sched_getaffinity(thread.id))
                threads += 1
    return len(processes), threads, frozenset(cpus)


def _seconds(process: psutil.Process) -> float:
    """User + system CPU seconds of a live process, with those of the children it has waited for."""
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        return times.user + times.system + times.children_user + times.children_system
    return 0.0


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """CPU seconds used so far: by the whole box, the server's process tree, finished clients, this script."""

    at: float
    box_s: float
    steal_s: float
    server_s: float
    clients_s: float
    script_s: float

    @classmethod
    def take(cls, server_pid: int | None) -> CpuSnapshot:
        """Reads the counters now (a client counts once it has been waited for)."""
        box = psutil.cpu_times()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        server: list[psutil.Process] = []
        if server_pid is not None:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(server_pid)
                server = [root, *root.children(recursive=True)]
        server_pids = {process.pid for process in server}
        me = psutil.Process()
        # The watchdog and other live helpers belong to the script; the server's tree is counted apart.
        helpers = [child for child in me.children(recursive=True) if child.pid not in server_pids]
        return cls(
            at=time.perf_counter(),
            box_s=box.user + box.nice + box.system,  # guest time is inside user on Linux
            steal_s=getattr(box, "steal", 0.0),
            server_s=sum(_seconds(process) for process in server),
            clients_s=children.ru_utime + children.ru_stime,
            script_s=sum(me.cpu_times()[:2]) + sum(_seconds(helper) for helper in helpers),
        )


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Who used the CPU between two snapshots, in CPU seconds.

    Attributes:
        wall_s: Seconds between the snapshots.
        server_s: The server's process tree.
        client_s: The client(s) waited for in between.
        others_s: Everything else on the box (other users' processes; the kernel's own work besides
            interrupts), never below 0: the box's busy time minus this script's, the server's and the client's.
        steal_s: Time the hypervisor gave this box's CPUs to someone else.
    """

    wall_s: float
    server_s: float
    client_s: float
    others_s: float
    steal_s: float

    @classmethod
    def between(cls, before: CpuSnapshot, after: CpuSnapshot) -> CpuUse:
        """The use between two snapshots."""
        server = after.server_s - before.server_s
        client = after.clients_s - before.clients_s
        script = after.script_s - before.script_s
        others = (after.box_s - before.box_s) - server - client - script
        return cls(after.at - before.at, server, client, max(0.0, others), after.steal_s - before.steal_s)

    def busy(self, over_s: float) -> bool:
        """Whether others (or the hypervisor) took more than :data:`BUSY_CORES` cores, spread over ``over_s``."""
        span = max(over_s, 1e-9)
        return self.others_s / span > BUSY_CORES or self.steal_s / span > BUSY_CORES

    def line(self, over_s: float) -> str:
        """One line: each party's CPU in cores, averaged over ``over_s`` seconds (the timed run)."""
        span = max(over_s, 1e-9)
        return (
            f"cpu over the {over_s:.1f} s run (cores): server {self.server_s / span:.2f}, "
            f"client {self.client_s / span:.2f} (start-up included), other processes {self.others_s / span:.2f}, "
            f"steal {self.steal_s / span:.2f}"
        )


def wait_for_calm(server_pid: int | None, settle_s: float, max_wait_s: float) -> float:
    """Sleeps ``settle_s``, then on until one second in which other processes took under
    :data:`BUSY_CORES` (at most ``max_wait_s`` more); the seconds waited past ``settle_s``."""
    time.sleep(max(0.0, settle_s - 1.0))
    waited = 0.0
    while True:
        before = CpuSnapshot.take(server_pid)
        time.sleep(1.0)
        use = CpuUse.between(before, CpuSnapshot.take(server_pid))
        if not use.busy(use.wall_s) or waited >= max_wait_s:
            return waited
        waited += use.wall_s
