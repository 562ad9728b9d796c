"""Helpers for the training tests: a synthetic separable photo set, tiny configs, waiting for runs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image

from carclf import runs
from carclf.config import load_config

# Three visually distinct patterns: ImageNet features separate them, chance accuracy is 1/3.
PATTERNS = ("horizontal", "vertical", "checker")
# Longest a tiny detached run may take on a shared 2-core machine before a test gives up.
RUN_TIMEOUT_S = 420


def pattern_image(kind: str, rng: np.random.Generator, size: int = 72) -> np.ndarray:
    """Stripes or a checkerboard in two random colours with a random period, phase and noise."""
    period = int(rng.integers(6, 14))
    phase = int(rng.integers(0, period))
    ys, xs = np.mgrid[0:size, 0:size]
    on = {
        "horizontal": ((ys + phase) // (period // 2)) % 2,
        "vertical": ((xs + phase) // (period // 2)) % 2,
        "checker": (((ys + phase) // (period // 2)) + ((xs + phase) // (period // 2))) % 2,
    }[kind].astype(bool)
    colours = rng.integers(0, 256, (2, 3))
    image = np.where(on[..., None], colours[0], colours[1]).astype(np.float32)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_pattern_dataset(root: Path, per_class: int = 12, seed: int = 0) -> Path:
    """A folder-per-class dataset of JPEG pattern photos under ``root``."""
    rng = np.random.default_rng(seed)
    for kind in PATTERNS:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(pattern_image(kind, rng)).save(folder / f"{kind}_{index:02d}.jpg", quality=92)
    return root


def tiny_config(data: Path, models_dir: Path, **overrides):
    """A config small enough for tests: 48 px, random-init backbone unless overridden, short stages."""
    values = {
        "data": str(data), "models_dir": str(models_dir), "img_size": 48, "weights": "none", "batch_size": 8,
        "augmentation": "light", "tta": 0, "early_stopping": False, "val_fraction": 0.25,
        "stages": [{"epochs": 2, "learning_rate": 1e-3, "unfreeze": 0},
                   {"epochs": 1, "learning_rate": 1e-4, "unfreeze": 2}],
    }
    values.update(overrides)
    return load_config(preset="quick", overrides=values)


def wait_for(run_id: str, runs_dir: Path, predicate, timeout: float = RUN_TIMEOUT_S, what: str = "condition"):
    """Poll the run until ``predicate(status, history)`` holds; fail with the log tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runs.read_status(run_id, runs_dir)
        history = runs.read_history(run_id, runs_dir)
        if predicate(status, history):
            return status, history
        if status["state"] in (runs.FAILED, runs.INTERRUPTED) and what != status["state"]:
            break
        time.sleep(0.3)
    raise AssertionError(f"run {run_id}: no {what} (state {status['state']}, error {status.get('error')});\n"
                         + runs.read_log_tail(run_id, runs_dir, 40))


def finished(status, history) -> bool:
    return status["state"] in (runs.FINISHED, runs.FAILED)
