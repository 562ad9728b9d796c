"""Will this training fit in memory? Estimate a run's peak RSS from its config, and pick settings that fit.

A training process that outgrows its container is killed without a word (Streamlit Community Cloud gives
about 2.7 GB, and the app's own server already holds 0.8-1.2 GB). So before a run starts, the CLI and the
Train page estimate its peak and, when it would not fit beside the app with a margin, lower
``micro_batch_size`` (slices of the batch computed at once, gradients averaged: less memory, a measured
accuracy cost) or refuse with a message saying what would fit.

The model (calibrated from real short trainings of the quick preset on this project's 2-core CPU machine,
70 photos of 5 brands, peak RSS of the training process tree sampled every 0.2 s by bench/bench_memory.py;
the data points are in bench/results/memory_calibration.json):

    peak = BASE + img_size**2 * SCALE[backbone] * share * (FIXED + PER_PHOTO * slice_size)

``BASE`` is TensorFlow, the model, its optimizer state, the input pipeline and the final (TTA) validation:
a head-only run at 288 px peaks at 1.46 GB, and the evaluation batch moved nothing measurable (batches of
32 vs 8 images at 288 px: 2.16 vs 2.14 GB). The rest is what training the backbone adds: it grows with the
pixels, with how much of the backbone is trained (``share``: the stage that trains the most sets the peak)
and with the photos computed at once (``slice_size``). Lite0, 11 runs: 288 px peaks at 2.14-2.16 GB with
slices of 16, 1.99 GB with 8, 1.50, 1.75 and 1.87 GB with 4 (the same config three times: micro-batched
peaks spread); 224 px at 1.79 GB with 16, 1.55 GB with 4; head-only 1.46 GB. The least-squares fit is
raised by its largest residual (0.15 GB) so that it is an upper bound of every run (over by up to 25 %). Lite1 at 240 px (1.99 GB) and Lite2 at 260 px with slices of 8 (2.00 GB)
give their ``SCALE`` (one run each). ``plan_fit`` first micro-batches and then, when that is not enough,
lowers the image size (both cost accuracy, said in the message), and refuses when nothing fits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from carclf.config import TrainConfig, parse_unfreeze
from carclf.errors import ConfigError
from carclf.machine import gb

# Training process RSS besides training the backbone (TF, model, Adam state, pipeline, final validation),
# bytes: the least-squares value raised by the largest residual (0.15 GB), so no measured run exceeds the estimate.
BASE_BYTES = 1.58e9
# Bytes per pixel of training the whole Lite0 backbone, independent of the slice (least-squares fit).
TRAIN_FIXED_BYTES_PER_PIXEL = 1852.2
# Bytes per pixel per photo of the slice computed at once (least-squares fit over 11 Lite0 runs).
TRAIN_BYTES_PER_PHOTO_PIXEL = 424.2
# Training cost relative to Lite0 at the same pixels (fitted on one measured run each).
SCALE = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 0.83, "efficientnet_lite2": 1.19}
# Backbones not measured: assume the largest measured scale (errs on the safe side).
DEFAULT_SCALE = max(SCALE.values())
# Share of the whole-backbone training cost a head-only run pays (measured: none beyond BASE).
HEAD_ONLY_SHARE = 0.0
# Image sizes plan_fit may fall back to, largest first, when micro-batching is not enough.
FALLBACK_IMG_SIZES = (256, 224, 192)
# What a smaller image costs, measured (quick preset, selection splits): 224 px erred 37.0 % vs 29.4 % at 288.
IMG_SIZE_COST = "smaller photos cost accuracy: 37.0 % vs 29.4 % selection error at 224 vs 288 px"
# Room kept free beside app + training: RSS is sampled, allocator peaks are short, and a container that
# reaches its limit is killed, so plan for 90 % of what is left.
MARGIN_FRACTION = 0.10
# What micro-batching costs, measured (quick preset, bench_accuracy.py splits 0-4, 2 CPU cores).
MICRO_BATCH_COST = "micro-batching cost accuracy on the benchmark: 39.6 % vs 31.9 % test error at 8"


@dataclass
class FitPlan:
    """The config to run, the one asked for, the estimate against the budget, what changed and whether it fits."""

    config: TrainConfig
    original: TrainConfig
    estimate_bytes: int
    budget_bytes: int
    changes: list[str] = field(default_factory=list)
    fits: bool = True
    hint: str = ""  # when it does not fit: what would

    @property
    def message(self) -> str:
        """One line for the CLI and the Train page."""
        if not self.fits:
            return (f"would need {gb(self.estimate_bytes)}, {gb(self.budget_bytes)} available: {self.hint}")
        text = f"Estimated peak {gb(self.estimate_bytes)} of {gb(self.budget_bytes)} available"
        if self.changes:
            text += "; " + "; ".join(self.changes)
        return text


def image_size(config: TrainConfig) -> int:
    """The input side the run trains at (the backbone's native size when ``img_size`` is 0)."""
    if config.img_size:
        return config.img_size
    from carclf.backbones import get_backbone

    return get_backbone(config.backbone).input_size


def trained_share(config: TrainConfig) -> float:
    """Largest share of the backbone any stage trains (1.0 = all), at least the head-only cost."""
    share = HEAD_ONLY_SHARE
    for stage in config.stages:
        unfreeze = parse_unfreeze(stage.unfreeze)
        if unfreeze == "all":
            share = 1.0
        elif unfreeze.endswith("%"):
            share = max(share, float(unfreeze[:-1]) / 100)
        elif unfreeze.endswith("layers") or unfreeze.endswith("layer"):
            share = max(share, 0.5)  # a layer count: its share depends on the backbone; assume half
    return share


def estimate_peak_bytes(config: TrainConfig) -> int:
    """Estimated peak RSS of the training process for ``config``, in bytes."""
    scale = SCALE.get(config.backbone, DEFAULT_SCALE)
    training = trained_share(config) * (TRAIN_FIXED_BYTES_PER_PIXEL + TRAIN_BYTES_PER_PHOTO_PIXEL * config.slice_size)
    return int(BASE_BYTES + image_size(config) ** 2 * scale * training)


def budget_bytes(limit_bytes: int, reserved_bytes: int = 0) -> int:
    """What a training may use: the limit minus the app's own memory, less the safety margin."""
    return int((limit_bytes - reserved_bytes) * (1 - MARGIN_FRACTION))


def plan_fit(config: TrainConfig, limit_bytes: Optional[int] = None, reserved_bytes: int = 0) -> FitPlan:
    """``config`` unchanged when it fits the budget, else with a smaller ``micro_batch_size``, else fits=False."""
    if limit_bytes is None:
        from carclf.machine import memory_limit_bytes

        limit_bytes = memory_limit_bytes()
    budget = budget_bytes(limit_bytes, reserved_bytes)
    estimate = estimate_peak_bytes(config)
    if estimate <= budget:
        return FitPlan(config, config, estimate, budget)
    for candidate, changes in _candidates(config):
        candidate_estimate = estimate_peak_bytes(candidate)
        if candidate_estimate <= budget:
            return FitPlan(candidate, config, candidate_estimate, budget, changes)
    return FitPlan(config, config, estimate, budget, fits=False, hint=_what_would_fit(config, budget))


def _candidates(config: TrainConfig):
    """(config, changes) to try, cheapest in accuracy first: micro-batching, then smaller photos (whole, then sliced)."""
    def slices(base):
        for micro in (size for size in range(base.slice_size - 1, 0, -1) if base.batch_size % size == 0):
            yield (dataclasses.replace(base, micro_batch_size=micro),
                   [f"micro_batch_size {config.micro_batch_size or 'off'} -> {micro} ({MICRO_BATCH_COST})"])

    yield from slices(config)
    for size in FALLBACK_IMG_SIZES:
        if size < image_size(config):
            smaller = dataclasses.replace(config, img_size=size)
            change = [f"img_size {image_size(config)} -> {size} ({IMG_SIZE_COST})"]
            yield smaller, change
            for candidate, more in slices(smaller):
                yield candidate, change + more


def _what_would_fit(config: TrainConfig, budget: int) -> str:
    """A suggestion (smaller image, smaller backbone, head-only) that fits ``budget``, as one phrase."""
    smallest = dataclasses.replace(config, micro_batch_size=1)
    for size in (160, 128):
        if size < image_size(config) and estimate_peak_bytes(dataclasses.replace(smallest, img_size=size)) <= budget:
            return f"try img_size {size} (with micro_batch_size 1), or free memory (close the Evaluate/Predict pages)."
    if config.backbone != "efficientnet_lite0":
        if estimate_peak_bytes(dataclasses.replace(smallest, backbone="efficientnet_lite0", img_size=224)) <= budget:
            return "try backbone efficientnet_lite0 at img_size 224, or free memory."
    if BASE_BYTES > budget:
        return "not even TensorFlow fits: free memory (stop other runs, restart the app) or use a larger machine."
    return "train the head only (unfreeze none) at img_size 224, or use a larger machine."


def require_fit(config: TrainConfig, limit_bytes: Optional[int] = None, reserved_bytes: int = 0) -> TrainConfig:
    """The config to run (possibly micro-batched); raises ``ConfigError`` with what would fit when nothing does."""
    plan = plan_fit(config, limit_bytes, reserved_bytes)
    if not plan.fits:
        raise ConfigError(f"this training does not fit in memory: {plan.message}")
    return plan.config


def plan_for_dashboard(config: TrainConfig) -> FitPlan:
    """``plan_fit`` against this container's limit, with the Streamlit server's process tree as reserved."""
    from carclf.machine import memory_limit_bytes, process_tree_rss

    return plan_fit(config, memory_limit_bytes(), process_tree_rss())
