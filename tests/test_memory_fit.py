"""carclf.memory_fit: the plan keeps, micro-batches or refuses a config against a memory limit."""

from __future__ import annotations

import dataclasses

import pytest

from carclf import memory_fit
from carclf.config import load_config
from carclf.errors import ConfigError


def quick():
    return load_config(preset="quick")


def test_estimate_grows_with_slice_image_and_trained_share():
    config = quick()
    whole = memory_fit.estimate_peak_bytes(config)
    assert memory_fit.estimate_peak_bytes(dataclasses.replace(config, micro_batch_size=8)) < whole
    assert memory_fit.estimate_peak_bytes(dataclasses.replace(config, img_size=224)) < whole
    head_only = dataclasses.replace(config, stages=config.stages[:1])
    assert memory_fit.estimate_peak_bytes(head_only) < memory_fit.estimate_peak_bytes(
        dataclasses.replace(config, micro_batch_size=8))
    assert memory_fit.image_size(dataclasses.replace(config, img_size=0, backbone="efficientnet_lite2")) == 260


def test_ample_memory_leaves_the_config_unchanged():
    config = quick()
    plan = memory_fit.plan_fit(config, limit_bytes=32 * 10**9, reserved_bytes=10**9)
    assert plan.fits and not plan.changes and plan.config is config
    assert plan.message.startswith("Estimated peak ") and "available" in plan.message
    assert memory_fit.require_fit(config, 32 * 10**9) is config


def test_when_slices_are_not_enough_the_image_gets_smaller():
    config = quick()
    sliced = dataclasses.replace(config, micro_batch_size=1)
    budget = memory_fit.estimate_peak_bytes(sliced) - 1  # slices of one photo at the preset's size just miss
    plan = memory_fit.plan_fit(config, int(budget / (1 - memory_fit.MARGIN_FRACTION)) + 10**9 + 1, 10**9)
    assert plan.fits and plan.config.img_size in memory_fit.FALLBACK_IMG_SIZES and plan.estimate_bytes <= budget
    assert plan.changes[0].startswith(f"img_size {config.img_size} -> {plan.config.img_size} (") and "37.0 %" in plan.message


def test_low_limit_chooses_micro_batching_that_fits():
    config = quick()
    limit, reserved = 2_700_000_000, 800_000_000  # a 2.7 GB container beside the idle server
    assert memory_fit.estimate_peak_bytes(config) > memory_fit.budget_bytes(limit, reserved)
    plan = memory_fit.plan_fit(config, limit, reserved)
    assert plan.fits and plan.original is config
    assert 0 < plan.config.micro_batch_size < config.batch_size and plan.config.batch_size == config.batch_size
    assert config.batch_size % plan.config.micro_batch_size == 0
    assert plan.estimate_bytes == memory_fit.estimate_peak_bytes(plan.config) <= plan.budget_bytes
    # the largest slice that fits: one size up would not
    bigger = [size for size in range(plan.config.slice_size + 1, config.batch_size + 1) if config.batch_size % size == 0]
    too_big = dataclasses.replace(plan.config, micro_batch_size=bigger[0])
    assert memory_fit.estimate_peak_bytes(too_big) > plan.budget_bytes
    assert f"micro_batch_size off -> {plan.config.micro_batch_size}" in plan.message and "39.6 %" in plan.message


def test_impossible_limit_is_refused_with_what_would_fit():
    config = quick()
    smallest = dataclasses.replace(config, micro_batch_size=1, img_size=min(memory_fit.FALLBACK_IMG_SIZES))
    # a budget below every plan tried but above slices of 1 at 160 px: refused, and told what would fit
    budget = (memory_fit.estimate_peak_bytes(smallest) + memory_fit.estimate_peak_bytes(
        dataclasses.replace(smallest, img_size=160))) / 2
    reserved = 200_000_000
    limit = int(budget / (1 - memory_fit.MARGIN_FRACTION)) + reserved
    plan = memory_fit.plan_fit(config, limit_bytes=limit, reserved_bytes=reserved)
    assert not plan.fits and plan.config is config
    assert plan.message.startswith("would need ") and "try img_size 160" in plan.message
    with pytest.raises(ConfigError, match="does not fit in memory"):
        memory_fit.require_fit(config, limit, reserved)
    hopeless = memory_fit.plan_fit(config, limit_bytes=600_000_000)
    assert not hopeless.fits and "not even TensorFlow fits" in hopeless.message


def test_dashboard_plan_uses_the_env_limit_and_this_process_as_reserved(monkeypatch):
    monkeypatch.setenv("CARCLF_MEMORY_LIMIT", "100G")
    plan = memory_fit.plan_for_dashboard(quick())
    assert plan.fits and not plan.changes
    assert 0 < 100 * 10**9 * (1 - memory_fit.MARGIN_FRACTION) - plan.budget_bytes < 10**10


def test_cli_refuses_a_run_that_cannot_fit_and_no_fit_opts_out(tmp_path, photo_root_for_fit):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CARCLF_MEMORY_LIMIT="1G", PYTHONPATH=str(root))
    command = [sys.executable, "-m", "carclf", "train", "--data", str(photo_root_for_fit), "--epochs", "2",
               "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), "--detach"]
    refused = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "does not fit in memory" in refused.stderr and "--no-fit" in refused.stderr
    assert not (tmp_path / "runs").exists()
    # --no-fit: the run is created as written (detached; stopped at once, only its config matters here)
    from carclf import runs
    from carclf.config import load_config

    started = subprocess.run(command + ["--no-fit"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[0]
    import signal

    try:
        os.killpg(runs.read_status(run_id, tmp_path / "runs")["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert load_config(runs.run_paths(run_id, tmp_path / "runs").config).micro_batch_size == 0


@pytest.fixture
def photo_root_for_fit(tmp_path, shared_data):
    """Two classes of two real photos each (copied from ../shared/data)."""
    import shutil

    source = shared_data / "cars/vidhyagupta_car_brands_5"
    root = tmp_path / "data"
    for brand in ("audi", "bmw"):
        (root / brand).mkdir(parents=True)
        for photo in sorted((source / brand).glob("*.jpg"))[:2]:
            shutil.copy(photo, root / brand)
    return root
