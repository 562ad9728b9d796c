"""carclf.machine: memory limit sources, sizes, process trees, CPUs (real /proc, fake cgroup files)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from carclf import machine
from carclf.errors import ConfigError


@pytest.mark.parametrize("text, expected", [("2.7G", 2_700_000_000), ("2700M", 2_700_000_000), ("2700 MB", 2_700_000_000),
                                            ("123456", 123456), ("1GiB", 2**30), ("512k", 512_000)])
def test_sizes_parse(text, expected):
    assert machine.parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "lots", "2.7X", "-1G", "0"])
def test_bad_sizes_say_what_to_write(bad):
    with pytest.raises(ConfigError, match="2.7G"):
        machine.parse_size(bad)


def _meminfo(tmp_path, total_kb=8_000_000, available_kb=6_000_000):
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       {total_kb} kB\nMemFree:   1000 kB\nMemAvailable:   {available_kb} kB\n")
    return path


def test_limit_comes_from_env_then_cgroup_v2_then_v1_then_ram(tmp_path):
    v2, v1, meminfo = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes", _meminfo(tmp_path)
    assert machine.memory_limit_bytes({}, v2, v1, meminfo) == 8_000_000 * 1024  # no cgroup files: RAM
    v1.write_text("9223372036854771712\n")  # cgroup v1's "no limit"
    assert machine.memory_limit_bytes({}, v2, v1, meminfo) == 8_000_000 * 1024
    v1.write_text("1073741824\n")
    assert machine.memory_limit_bytes({}, v2, v1, meminfo) == 2**30
    v2.write_text("max\n")  # v2 without a limit falls through to v1
    assert machine.memory_limit_bytes({}, v2, v1, meminfo) == 2**30
    v2.write_text("2899102924\n")
    assert machine.memory_limit_bytes({}, v2, v1, meminfo) == 2899102924
    assert machine.memory_limit_bytes({"CARCLF_MEMORY_LIMIT": "2.7G"}, v2, v1, meminfo) == 2_700_000_000


def test_process_tree_rss_counts_children():
    own = machine.process_tree_rss()
    child = subprocess.Popen([sys.executable, "-c", "b = bytearray(200_000_000); import time; time.sleep(60)"])
    try:
        for _ in range(100):
            if machine.process_rss(child.pid) > 150_000_000:
                break
            import time
            time.sleep(0.1)
        assert child.pid in machine.process_tree_pids()
        assert machine.process_tree_rss() - own > 150_000_000
    finally:
        child.kill()
        child.wait()
    assert machine.process_rss(child.pid) == 0


def test_cpu_quota_and_count(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("50000 100000\n")
    assert machine.cpu_quota(v2) == 0.5
    assert machine.cpu_count(quota=0.5) == 1
    v2.write_text("max 100000\n")
    assert machine.cpu_quota(v2) is None
    assert machine.cpu_count(quota=None) == len(os.sched_getaffinity(0))


def test_describe_is_one_line(monkeypatch):
    monkeypatch.setenv("CARCLF_MEMORY_LIMIT", "2.7G")
    line = machine.describe()
    assert "of 2.7 GB (override)" in line and "CPU" in line and "\n" not in line
