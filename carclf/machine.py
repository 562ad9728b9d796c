"""What this machine (or container) offers: memory limit, memory in use, CPUs, GPU presence.

Training must fit the container it runs in (Streamlit Community Cloud gives about 2.7 GB), and the limit a
container enforces is its cgroup's, not the host's RAM that ``/proc/meminfo`` shows. Everything here only
READS /proc and /sys (it never creates or changes a cgroup) and never imports TensorFlow, so the dashboard
can ask cheaply. ``CARCLF_MEMORY_LIMIT`` overrides the limit for tests and for users who know better.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Optional

from carclf.errors import ConfigError

# Environment variable overriding the memory limit: "2.7G", "2700M", "512k" or plain bytes.
MEMORY_LIMIT_ENV = "CARCLF_MEMORY_LIMIT"
# cgroup v2 and v1 files holding the memory limit of this container.
CGROUP_V2_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")
CGROUP_V1_MEMORY_LIMIT = Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")
# cgroup v2 and v1 CPU quota files.
CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_CPU_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
# cgroup v2 and v1 memory currently charged to this container.
CGROUP_V2_MEMORY_CURRENT = Path("/sys/fs/cgroup/memory.current")
CGROUP_V1_MEMORY_USAGE = Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")
MEMINFO = Path("/proc/meminfo")
PROC = Path("/proc")
# A cgroup v1 "limit" at or above this is the kernel's way of saying "no limit" (it reports ~2**63).
UNLIMITED_THRESHOLD = 1 << 60
# Size suffixes accepted by parse_size (powers of 1000: "2.7G" is what the hosting docs call 2.7 GB).
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KI": 2**10, "KIB": 2**10, "MI": 2**20, "MIB": 2**20, "GI": 2**30, "GIB": 2**30}


def parse_size(text: str) -> int:
    """Bytes in ``text``: "2.7G", "2700M", "2700 MB", "1.5GiB" or "123456" (decimal units, binary with i)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={text!r}: write a size such as 2.7G, 2700M or 2700000000.")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={text!r}: the size must be above zero, e.g. 2.7G.")
    return value


def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def cgroup_memory_limit(v2: Path = CGROUP_V2_MEMORY_MAX, v1: Path = CGROUP_V1_MEMORY_LIMIT) -> Optional[int]:
    """The container's memory limit in bytes from cgroup v2 or v1, or None when there is none ("max", huge)."""
    for path in (v2, v1):
        value = _read_int(path)  # "max" (v2: no limit) reads as None
        if value is not None and 0 < value < UNLIMITED_THRESHOLD:
            return value
    return None


def physical_memory_bytes(meminfo: Path = MEMINFO) -> int:
    """Physical RAM (MemTotal of /proc/meminfo) in bytes."""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", meminfo.read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def memory_limit_bytes(env: Mapping[str, str] = os.environ, v2: Path = CGROUP_V2_MEMORY_MAX,
                       v1: Path = CGROUP_V1_MEMORY_LIMIT, meminfo: Path = MEMINFO) -> int:
    """Memory this app may use: ``CARCLF_MEMORY_LIMIT``, else the cgroup limit, else physical RAM (smallest applies)."""
    if env.get(MEMORY_LIMIT_ENV, "").strip():
        return parse_size(env[MEMORY_LIMIT_ENV])
    physical = physical_memory_bytes(meminfo)
    limit = cgroup_memory_limit(v2, v1)
    return min(limit, physical) if limit and physical else (limit or physical)


def memory_used_bytes(v2: Path = CGROUP_V2_MEMORY_CURRENT, v1: Path = CGROUP_V1_MEMORY_USAGE,
                      meminfo: Path = MEMINFO) -> int:
    """Memory in use: the container's charge (cgroup) when limited, else MemTotal - MemAvailable."""
    if cgroup_memory_limit() is not None:
        for path in (v2, v1):
            value = _read_int(path)
            if value is not None:
                return value
    text = meminfo.read_text()
    fields = dict(re.findall(r"^(\w+):\s+(\d+)", text, re.MULTILINE))
    return (int(fields.get("MemTotal", 0)) - int(fields.get("MemAvailable", 0))) * 1024


def process_rss(pid: int, proc: Path = PROC) -> int:
    """Resident memory (VmRSS) of one process in bytes; 0 when it is gone or a zombie."""
    try:
        text = (proc / str(pid) / "status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def child_pids(proc: Path = PROC) -> dict[int, list[int]]:
    """Parent pid -> its children's pids, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) is in parentheses and may hold spaces: parse after the last ")"
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree_pids(pid: Optional[int] = None, proc: Path = PROC) -> list[int]:
    """``pid`` (default: this process) and all its descendants."""
    root = os.getpid() if pid is None else pid
    children = child_pids(proc)
    tree, todo = [], [root]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def process_tree_rss(pid: Optional[int] = None, proc: Path = PROC) -> int:
    """Sum of VmRSS of ``pid`` (default: this process) and all its descendants, in bytes."""
    return sum(process_rss(member, proc) for member in process_tree_pids(pid, proc))


def cpu_quota(v2: Path = CGROUP_V2_CPU_MAX, v1_quota: Path = CGROUP_V1_CPU_QUOTA,
              v1_period: Path = CGROUP_V1_CPU_PERIOD) -> Optional[float]:
    """CPUs the cgroup quota allows (e.g. 0.5), or None when unlimited."""
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    quota_us, period_us = _read_int(v1_quota), _read_int(v1_period)  # v1 "-1" (no quota) reads as None
    return quota_us / period_us if quota_us and period_us else None


def cpu_count(quota: Optional[float] = ...) -> int:
    """CPUs this process may use: its affinity mask, lowered by a cgroup quota (at least 1)."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    share = cpu_quota() if quota is ... else quota
    if share:
        available = min(available, max(1, int(share + 0.999)))  # 0.5 of a CPU still is one CPU to run on
    return max(1, available)


def has_gpu(proc_driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether an NVIDIA GPU is visible (driver's /proc entry or nvidia-smi), without importing TensorFlow."""
    try:
        if proc_driver.is_dir() and any(proc_driver.iterdir()):
            return True
    except OSError:
        pass
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def gb(value: int) -> str:
    """Bytes as "1.9 GB" (decimal, one decimal place)."""
    return f"{value / 1e9:.1f} GB"


def describe() -> str:
    """One line: memory limit and use, CPUs, GPU."""
    limit, used = memory_limit_bytes(), memory_used_bytes()
    source = "override" if os.environ.get(MEMORY_LIMIT_ENV, "").strip() else (
        "container" if cgroup_memory_limit() else "RAM")
    return (f"memory {gb(used)} used of {gb(limit)} ({source}), {cpu_count()} CPU(s), "
            f"{'GPU' if has_gpu() else 'no GPU'}")
