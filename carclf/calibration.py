"""Probabilities that mean what they say: temperature scaling, and the scores that show whether it worked.

A model trained with label smoothing and dropout on ~100 photos is under-confident: it says 64 % on answers
that are right 77 % of the time. Temperature scaling divides the logits by one number T fitted on the run's
validation photos (minimising their negative log-likelihood) and softmaxes again. One parameter cannot
change which class is on top (accuracy is untouched) and cannot overfit ~25 validation photos; vector or
matrix scaling (a parameter per class or per class pair) and isotonic regression (a step function per
bin) would. A classifier here ends in a softmax, so its logits are taken back as ``log(p)``: softmax is
invariant to a constant per row, so ``softmax(log(p) / T)`` is exactly ``softmax(z / T)``.

TTA averages several views and is less sharp than one view, so a bundle stores one temperature per view
count it was fitted for (``temperature_for`` picks the one matching the views a prediction averages).
Below ``MIN_FIT_PHOTOS`` validation photos a fit is kept only when a leave-one-out check says it helps on
photos it did not see; a bundle without a temperature is left exactly as it was.

Tried and not kept (2026-12-03, bench/bench_calibration.py, fast with label smoothing 0.3 over ten splits,
pooled test ECE 14.3 % before, 7.6 % after the validation fit, 4.3 % for the hindsight temperature): a
head-only run also fitting its no-TTA temperature on out-of-fold probabilities of its training photos (the
head retrained on 4/5 of the cached features 5 times, scikit-learn's ``CalibratedClassifierCV(ensemble=
False)``), 112 photos per fit instead of 23. Fold heads early-stopped on the validation photos: 6.9 %, +10 s
per run; trained to the run's best epoch: 8.0 %, +4 s; 10 folds: 7.0 %. Within the benchmark's noise, and
the temperatures stayed near 0.72 where the test photos want 0.60: the validation photos pooled over the
splits are 9 points less often right than the test photos at the same mean confidence (49 % vs 58 %, 43 %).
Over thirty splits (1,410 test photos) the validation fit leaves 6.8 % (7.3 % with TTA) and even the
hindsight temperature 5.1 %: that model's miscalibration is not one temperature's worth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

# bundle meta.json keys: the fitted temperatures (and how they were fitted), and the "not sure" threshold.
META_KEY = "calibration"
UNCERTAIN_KEY = "uncertain_below"

# Calibrated top probability under which an answer is "not sure" (Predict page, predict JSON). 0.5: an
# answer below it is more likely wrong than right when the probabilities are calibrated; measured on the
# brand benchmark by bench/bench_calibration.py (share of wrong answers caught, of right answers lost).
UNCERTAIN_BELOW = 0.5

# Equal-width confidence bins of the expected calibration error and the reliability diagram.
BINS = 10

# Probabilities are clipped here before the log: a float32 softmax underflows to exactly 0.
EPS = 1e-30

# Temperatures searched (log-spaced): far beyond any sane model on both sides.
T_MIN, T_MAX = 0.05, 20.0
# A Gaussian prior on log T (standard deviation in nats): negligible on a real validation set, but it stops a
# validation set the model gets entirely right from driving T towards 0 (infinite confidence).
PRIOR_SIGMA = 1.0

# From this many validation photos the fit is used as is; with fewer it must pass a leave-one-out check.
MIN_FIT_PHOTOS = 20
# Under this many photos nothing is fitted (a leave-one-out check means nothing).
MIN_CHECK_PHOTOS = 5

# Golden-section iterations on log T: the bracket shrinks 0.618x each, to ~1e-9 of its width.
SEARCH_STEPS = 48


def log_probs(probabilities: np.ndarray) -> np.ndarray:
    """``log(p)``, clipped: the logits of a softmax output up to a constant per row."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), EPS, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: Optional[float]) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row (float64); None or 1 returns ``p`` unchanged (as float64)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if temperature is None or temperature == 1.0:
        return probabilities
    scaled = log_probs(probabilities) / float(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


# --- scores --------------------------------------------------------------------------------------------------
def nll(probabilities: np.ndarray, labels: Sequence[int]) -> float:
    """Mean negative log-likelihood of the true classes (nats)."""
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return 0.0
    return float(-log_probs(np.asarray(probabilities)[np.arange(len(labels)), labels]).mean())


def brier(probabilities: np.ndarray, labels: Sequence[int]) -> float:
    """Mean multi-class Brier score: sum over classes of (p - one-hot)^2 (0 perfect, 2 worst)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if not len(labels):
        return 0.0
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


@dataclass(frozen=True)
class Bin:
    """One confidence bin of a reliability diagram: photos whose top probability is in (lower, upper]."""

    lower: float
    upper: float
    count: int
    confidence: Optional[float]  # mean top probability (None when empty)
    accuracy: Optional[float]  # share right (None when empty)


def reliability(probabilities: np.ndarray, labels: Sequence[int], bins: int = BINS) -> list[Bin]:
    """The reliability-diagram data: ``bins`` equal-width bins of top-1 confidence (the first includes 0)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probabilities.max(axis=1) if len(labels) else np.zeros(0)
    right = probabilities.argmax(axis=1) == labels if len(labels) else np.zeros(0, dtype=bool)
    # (lower, upper] with a little slack, so 0.7 lands in (0.6, 0.7] although 0.7 * 10 is 7.000000000000001
    index = np.clip(np.ceil(confidence * bins - 1e-9).astype(np.int64) - 1, 0, bins - 1)
    found = []
    for number in range(bins):
        members = index == number
        count = int(members.sum())
        found.append(Bin(number / bins, (number + 1) / bins, count,
                         float(confidence[members].mean()) if count else None,
                         float(right[members].mean()) if count else None))
    return found


def ece(probabilities: np.ndarray, labels: Sequence[int], bins: int = BINS) -> float:
    """Expected calibration error: the photo-weighted mean |accuracy - confidence| over the bins."""
    found = reliability(probabilities, labels, bins)
    total = sum(b.count for b in found)
    return float(sum(b.count * abs(b.accuracy - b.confidence) for b in found if b.count) / total) if total else 0.0


def scores(probabilities: np.ndarray, labels: Sequence[int], bins: int = BINS) -> dict:
    """Accuracy, ECE, NLL, Brier and the reliability bins, JSON-ready."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    found = reliability(probabilities, labels, bins)
    return {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == labels)) if len(labels) else 0.0,
        "ece": ece(probabilities, labels, bins),
        "nll": nll(probabilities, labels),
        "brier": brier(probabilities, labels),
        "mean_confidence": float(probabilities.max(axis=1).mean()) if len(labels) else 0.0,
        "bins": [vars(b) for b in found],
    }


# --- fitting -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """A fitted temperature and why it is what it is (``reason`` is the run log's line)."""

    temperature: float  # 1.0 when the fit was skipped
    reason: str
    photos: int
    nll_before: float
    nll_after: float
    ece_before: float = 0.0
    ece_after: float = 0.0

    def to_dict(self) -> dict:
        return {"temperature": round(self.temperature, 6), "reason": self.reason, "photos": self.photos,
                **{key: round(getattr(self, key), 6) for key in ("nll_before", "nll_after", "ece_before", "ece_after")}}


def _objective(logits: np.ndarray, labels: np.ndarray, log_t: float) -> float:
    """Summed NLL at temperature exp(log_t) plus the prior on log T (the MAP objective)."""
    scaled = logits / math.exp(log_t)
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float((log_norm - scaled[np.arange(len(labels)), labels]).sum() + log_t ** 2 / (2 * PRIOR_SIGMA ** 2))


def _search(logits: np.ndarray, labels: np.ndarray) -> float:
    """The MAP temperature by golden-section search on log T (the NLL is convex in 1/T, so one minimum)."""
    low, high = math.log(T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = _objective(logits, labels, a), _objective(logits, labels, b)
    for _ in range(SEARCH_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = _objective(logits, labels, a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _objective(logits, labels, b)
    return math.exp((low + high) / 2)


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int]) -> Fit:
    """Fit T on validation probabilities (N, C) and true class indices; apply it with ``apply_temperature``.

    From ``MIN_FIT_PHOTOS`` photos the fit is used. With fewer (a tiny validation split can make a fit
    worse) it is kept only when each photo's NLL under a temperature fitted WITHOUT it beats its
    uncalibrated NLL on average (leave-one-out); under ``MIN_CHECK_PHOTOS`` nothing is fitted.
    """
    logits = log_probs(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    before, ece_before = nll(probabilities, labels), ece(probabilities, labels)
    if n < MIN_CHECK_PHOTOS:
        return Fit(1.0, f"not calibrated: {n} validation photo(s), fewer than {MIN_CHECK_PHOTOS} to check a fit",
                   n, before, before, ece_before, ece_before)
    temperature = _search(logits, labels)
    calibrated = apply_temperature(probabilities, temperature)
    after, ece_after = nll(calibrated, labels), ece(calibrated, labels)
    scores_text = f"NLL {before:.3f} -> {after:.3f}, ECE {ece_before:.1%} -> {ece_after:.1%}"
    if n >= MIN_FIT_PHOTOS:
        return Fit(temperature, f"temperature {temperature:.3f} fitted on {n} validation photos ({scores_text})",
                   n, before, after, ece_before, ece_after)
    held_out = _leave_one_out_nll(probabilities, logits, labels)
    if held_out < before:
        return Fit(temperature, f"temperature {temperature:.3f} fitted on only {n} validation photos, kept: "
                   f"leave-one-out NLL {before:.3f} -> {held_out:.3f} ({scores_text})", n, before, after,
                   ece_before, ece_after)
    return Fit(1.0, f"not calibrated: only {n} validation photos (< {MIN_FIT_PHOTOS}) and a fit did not help on "
               f"held-out photos (leave-one-out NLL {before:.3f} -> {held_out:.3f})", n, before, before,
               ece_before, ece_before)


def _leave_one_out_nll(probabilities: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean NLL of each photo under the temperature fitted on the others."""
    losses = []
    for left_out in range(len(labels)):
        keep = np.arange(len(labels)) != left_out
        temperature = _search(logits[keep], labels[keep])
        losses.append(nll(apply_temperature(probabilities[[left_out]], temperature), labels[[left_out]]))
    return float(np.mean(losses))


# --- what a bundle stores ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A bundle's temperatures by the number of TTA views they were fitted for (1 = no TTA)."""

    temperatures: dict = field(default_factory=dict)  # views -> T
    fits: dict = field(default_factory=dict)  # views -> Fit.to_dict()

    @classmethod
    def from_meta(cls, meta: dict) -> Optional["Calibration"]:
        """The bundle's calibration, or None when it has none (or one this version cannot read)."""
        stored = (meta or {}).get(META_KEY)
        if not isinstance(stored, dict) or not isinstance(stored.get("temperature"), dict):
            return None
        temperatures = {}
        for views, value in stored["temperature"].items():
            try:
                views, value = int(views), float(value)
            except (TypeError, ValueError):
                continue
            if views >= 1 and T_MIN <= value <= T_MAX:
                temperatures[views] = value
        fits = stored.get("fits") if isinstance(stored.get("fits"), dict) else {}
        fits = {int(views): fit for views, fit in fits.items() if str(views).isdigit()}
        return cls(temperatures, fits) if temperatures else None

    def to_meta(self) -> dict:
        return {"temperature": {str(v): round(t, 6) for v, t in sorted(self.temperatures.items())},
                "fits": {str(v): fit for v, fit in sorted(self.fits.items())}}

    def temperature_for(self, views: int) -> float:
        """T for a prediction averaging ``views`` views: the one fitted for that many; else, with TTA, the
        TTA fit nearest in views (averaging softens answers alike); else the no-TTA one; else 1."""
        fitted = self._fitted_for(views)
        return 1.0 if fitted is None else self.temperatures[fitted]

    def _fitted_for(self, views: int) -> Optional[int]:
        """The view count whose fit serves ``views`` views (None: none does)."""
        if views in self.temperatures:
            return views
        averaged = [v for v in self.temperatures if v > 1]
        if views > 1 and averaged:
            return min(averaged, key=lambda v: (abs(v - views), v))
        return 1 if 1 in self.temperatures else None

    def skipped_reason(self, views: int) -> Optional[str]:
        """Why no temperature applies to ``views`` views (the run log's "not calibrated: ..." line), when
        the fit training made for them was skipped (stored as T 1); None when a temperature applies."""
        fitted = self._fitted_for(views)
        if fitted is not None and self.temperatures[fitted] != 1.0:
            return None
        fit = self.fits.get(fitted)
        reason = fit.get("reason", "") if isinstance(fit, dict) else ""
        return reason if reason.startswith("not calibrated") else "not calibrated"


def fit_views(view_probabilities: Sequence[np.ndarray], labels: Sequence[int], tta: int) -> Calibration:
    """Fit the no-TTA temperature on each photo's first view ("original") and, when ``tta`` > 1, the TTA
    one on the mean of its first ``tta`` views. ``view_probabilities``: one (views, C) array per photo, as
    ``carclf.tta.score_photos`` returns them."""
    stacks = [np.asarray(p, dtype=np.float64) for p in view_probabilities]
    labels = list(labels)
    if not stacks:
        return Calibration({1: 1.0}, {1: fit_temperature(np.zeros((0, 1)), []).to_dict()})
    sets = {1: np.stack([p[0] for p in stacks])}
    if tta > 1:
        sets[tta] = np.stack([p[:tta].mean(axis=0) for p in stacks])
    fits = {views: fit_temperature(probs, labels) for views, probs in sets.items()}
    return Calibration({v: f.temperature for v, f in fits.items()}, {v: f.to_dict() for v, f in fits.items()})


def log_line(calibration: Calibration) -> str:
    """One run-log line per fitted view count."""
    return "\n".join(f"calibration ({'no TTA' if views == 1 else f'TTA {views}'}): {fit['reason']}"
                     for views, fit in sorted(calibration.fits.items()))


def is_uncertain(probability: float, threshold: Optional[float]) -> bool:
    """Whether a calibrated top probability is "not sure" under ``threshold`` (None: never)."""
    return threshold is not None and probability < threshold


def uncertain_threshold(meta: dict) -> Optional[float]:
    """The bundle's "not sure" threshold: only bundles with a calibration have one (others behave as before)."""
    if Calibration.from_meta(meta) is None:
        return None
    value = (meta or {}).get(UNCERTAIN_KEY, UNCERTAIN_BELOW)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return UNCERTAIN_BELOW
    return value if 0.0 <= value <= 1.0 else UNCERTAIN_BELOW


def summary_line(measured: dict) -> str:
    """An evaluation's calibration scores in words: ECE, NLL and Brier before -> after the temperature (or
    as they are, for a bundle without one). ``measured``: ``EvalReport.calibration``."""
    before, after, temperature = measured["before"], measured["after"], measured.get("temperature")
    if temperature is None:
        why = measured.get("not_calibrated") or "no calibration in this bundle"
        return f"probabilities ({why}): ECE {before['ece']:.1%}, NLL {before['nll']:.3f}, Brier {before['brier']:.3f}"
    return (f"calibration (temperature {temperature:.3f}): ECE {before['ece']:.1%} -> {after['ece']:.1%}, "
            f"NLL {before['nll']:.3f} -> {after['nll']:.3f}, Brier {before['brier']:.3f} -> {after['brier']:.3f}")
