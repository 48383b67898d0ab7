"""The server's process tree for the dashboard: each process's CPU and memory, its GPU memory, and deaths."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from engine.hardware.nvml import NvmlLibrary

__all__ = [
    "ProcessSample",
    "ProcessTreeSampler",
    "TreeSample",
    "gpu_memory_by_pid",
    "listening_pid",
    "vllm_pids",
]

# vLLM names its processes (setproctitle): "VLLM::EngineCore", "VLLM::Worker_TP0"; older builds and
# the CPU backend keep the Python command line, where the role is in the arguments.
_ENGINE_MARKERS = ("EngineCore", "engine_core")
# The tree is listed anew every this many samples; in between, the processes already known are read.
RESCAN_TICKS = 5


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process of the server's tree at one moment.

    Attributes:
        pid: Its process id.
        name: What it is: vLLM's process title (``VLLM::EngineCore``) or the program name.
        cpu_percent: CPU use since the previous sample, in percent of one core (0.0 on the first).
        rss_bytes: Resident memory.
    """

    pid: int
    name: str
    cpu_percent: float
    rss_bytes: int


@dataclass(frozen=True, slots=True)
class TreeSample:
    """The whole tree at one moment, and what has died since it was first seen.

    Attributes:
        processes: The root first, then its descendants; empty when the root is gone.
        root_alive: Whether the server's main process still runs.
        lost: Names (each once) of processes seen in an earlier sample that are gone while the root was watched.
    """

    processes: tuple[ProcessSample, ...]
    root_alive: bool
    lost: tuple[str, ...]

    @property
    def engine_died(self) -> bool:
        """Whether the main process or its engine core has gone."""
        return not self.root_alive or any(is_engine(name) for name in self.lost)

    @property
    def rss_bytes(self) -> int | None:
        """Resident memory of the whole tree; ``None`` when the root is gone."""
        return sum(process.rss_bytes for process in self.processes) if self.root_alive else None


def is_engine(name: str) -> bool:
    """Whether a process name is vLLM's engine core (the process that runs the model)."""
    return any(marker in name for marker in _ENGINE_MARKERS)


def _name(process: psutil.Process) -> str:
    try:
        name = process.name()
        if name.startswith("VLLM") or is_engine(name):
            return name
        cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"
    # "python -m vllm.entrypoints.openai.api_server ..." reads better as its module.
    if "-m" in cmdline[:-1]:
        return cmdline[cmdline.index("-m") + 1].rsplit(".", 1)[-1]
    return name


class ProcessTreeSampler:
    """Samples a server's process tree, keeping each process's handle so CPU use is per interval."""

    def __init__(self, pid: int) -> None:
        """Watches the tree under ``pid``; nothing is read until :meth:`sample`.

        Args:
            pid: The server's main process id.
        """
        self.pid = pid
        self._lock = threading.Lock()
        self._known: dict[int, tuple[psutil.Process, str]] = {}
        # Names only, each once: a server that forks short-lived helpers must not grow this every tick.
        self._lost: dict[str, None] = {}
        self._ticks = 0

    def sample(self) -> TreeSample:
        """Reads the tree now."""
        with self._lock:
            try:
                root = psutil.Process(self.pid)
                alive = root.status() != psutil.STATUS_ZOMBIE
                if not alive:
                    current = []
                elif self._ticks % RESCAN_TICKS == 0 or not self._known:
                    # Listing children scans every process on the machine: not every tick.
                    current = [root, *root.children(recursive=True)]
                else:
                    current = [root, *(handle for pid, (handle, _) in self._known.items() if pid != self.pid)]
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                alive, current = False, []
            self._ticks += 1
            samples = []
            seen = set()
            for process in current:
                entry = self._known.get(process.pid)
                if entry is None:
                    entry = (process, _name(process))
                    self._known[process.pid] = entry
                    first = True
                else:
                    first = False
                handle, name = entry
                try:
                    cpu = handle.cpu_percent(interval=None)
                    rss = handle.memory_info().rss
                    if handle.status() == psutil.STATUS_ZOMBIE:
                        continue
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue  # ended between the listing and the read: counted as lost next time
                seen.add(process.pid)
                samples.append(ProcessSample(process.pid, name, 0.0 if first else float(cpu), int(rss)))
            for pid in list(self._known):
                if pid not in seen:
                    self._lost[self._known.pop(pid)[1]] = None
            # The root first, then the heaviest: the engine core before helpers like the resource tracker.
            ordered = samples[:1] + sorted(samples[1:], key=lambda sample: -sample.rss_bytes)
            return TreeSample(tuple(ordered), alive, tuple(self._lost))

    def pids(self) -> set[int]:
        """The pids seen in the last sample."""
        with self._lock:
            return set(self._known)


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port, when this user may see it (a local server's pid).

    Args:
        port: The TCP port.
    """
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for connection in connections:
        if connection.status == psutil.CONN_LISTEN and connection.laddr and connection.laddr.port == port:
            return connection.pid
    return None


def vllm_pids() -> set[int]:
    """Processes on this machine that look like vLLM (for a server quant-tui did not start)."""
    found = set()
    for process in psutil.process_iter(["name", "cmdline"]):
        info: dict[str, Any] = process.info
        text = " ".join([info.get("name") or "", *(info.get("cmdline") or [])])
        if "vllm" in text.lower():
            found.add(process.pid)
    return found


def gpu_memory_by_pid(library: NvmlLibrary, gpu_count: int) -> tuple[dict[int, int], ...]:
    """GPU memory each process holds on each GPU (NVML's compute processes), by GPU index then pid.

    Args:
        library: The NVML library.
        gpu_count: How many GPUs to ask about.
    """
    per_gpu: list[dict[int, int]] = []
    for index in range(gpu_count):
        handle = library.query("nvmlDeviceGetHandleByIndex", index)
        processes = library.query("nvmlDeviceGetComputeRunningProcesses", handle) if handle else None
        used: dict[int, int] = {}
        for process in processes or ():
            pid, memory = getattr(process, "pid", None), getattr(process, "usedGpuMemory", None)
            if isinstance(pid, int) and isinstance(memory, int):
                used[pid] = used.get(pid, 0) + memory
        per_gpu.append(used)
    return tuple(per_gpu)
