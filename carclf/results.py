"""Plain result objects returned by ``Predictor.predict`` / ``predict_batch``.

Results are data, not behaviour: the dashboard, the CLI and evaluation read the same fields, and
``to_dict()`` gives exactly what ``python -m carclf predict --json`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ViewResult:
    """What the model saw in one TTA view: its name, its top label and its full probability vector."""

    name: str
    label: str
    probability: float
    probabilities: tuple[float, ...]


@dataclass(frozen=True)
class Prediction:
    """One photo's answer. ``label``/``probability`` are the TTA-averaged top-1 (display names).

    ``is_car``/``car_score`` are the gate's verdict: when ``is_car`` is False the label should not be shown
    as the answer. ``error`` is set (and the rest empty) for a photo that could not be read in a batch.
    Probabilities are calibrated when the bundle has a temperature (``temperature``, see
    ``carclf.calibration``); ``raw_probabilities`` are the model's own. ``uncertain``: the calibrated top
    probability is under the bundle's "not sure" threshold (never for a bundle without calibration).
    """

    source: str
    label: str | None = None
    probability: float = 0.0
    top_k: list[tuple[str, float]] = field(default_factory=list)
    probabilities: tuple[float, ...] = ()
    is_car: bool = False
    car_score: float = 0.0
    views: list[ViewResult] = field(default_factory=list)
    tta_changed_answer: bool = False
    model_name: str = ""
    notice: str | None = None
    error: str | None = None
    uncertain: bool = False
    temperature: float | None = None  # the temperature applied (None: the bundle has no calibration)
    raw_probabilities: tuple[float, ...] = ()

    @property
    def ok(self) -> bool:
        """False when the photo could not be read."""
        return self.error is None

    def to_dict(self) -> dict:
        """JSON-ready dict (probabilities rounded to 6 digits; per-view vectors left out, labels kept)."""
        return {
            "source": self.source,
            "label": self.label,
            "probability": round(self.probability, 6),
            "top_k": [[label, round(p, 6)] for label, p in self.top_k],
            "is_car": self.is_car,
            "car_score": round(self.car_score, 6),
            "views": [{"name": v.name, "label": v.label, "probability": round(v.probability, 6)} for v in self.views],
            "tta_changed_answer": self.tta_changed_answer,
            "uncertain": self.uncertain,
            "temperature": None if self.temperature is None else round(self.temperature, 6),
            "model": self.model_name,
            "notice": self.notice,
            "error": self.error,
        }


def top_k_labels(probs: np.ndarray, names: tuple[str, ...], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable (name, probability) pairs, most probable first (ties: lower index first)."""
    order = np.argsort(-np.asarray(probs), kind="stable")[: max(1, k)]
    return [(names[i], float(probs[i])) for i in order]
