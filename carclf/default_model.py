"""The built-in default model: what carclf answers before anyone has trained a classifier.

Without a trained bundle the app must still say something useful about a car photo. The pretrained
EfficientNet-Lite0 ImageNet classifier knows a dozen car body types (sports car, cab, convertible, jeep,
station wagon, ...); the default model reports the body type, renormalised over those classes, and every
result carries ``NOTICE`` saying so and how to train the ten-model classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carclf.imagenet import BODY_TYPES

# The backbone whose ImageNet head serves as the default model and the car gate (offline weights).
DEFAULT_BACKBONE = "efficientnet_lite0"

# The name a default-model Predictor reports, and the word the CLI accepts instead of a bundle folder.
DEFAULT_MODEL_NAME = "default"

# Shown with every default-model result, so nobody mistakes a body type for the trained car model.
NOTICE = (
    "Generic default model (pretrained EfficientNet-Lite0 ImageNet classifier): it names the car's body "
    "type, not its make and model. Train the ten-model classifier with `python -m carclf train --data DIR` "
    "(or the dashboard's Train page); the newest bundle in models/ is then used instead."
)

# Added to the car mass before renormalising, so a photo with no car mass gives finite probabilities.
EPSILON = 1e-12


@dataclass(frozen=True)
class BodyTypeMap:
    """How the 1000 ImageNet probabilities fold into body-type probabilities (several ids may share one)."""

    class_names: tuple[str, ...]  # body-type labels in output order
    imagenet_ids: tuple[int, ...]  # every ImageNet id that counts towards a body type
    columns: tuple[int, ...]  # for each id in imagenet_ids, its body type's column

    @classmethod
    def from_body_types(cls, body_types: dict[int, str]) -> "BodyTypeMap":
        names = tuple(dict.fromkeys(body_types[i] for i in sorted(body_types)))
        ids = tuple(sorted(body_types))
        return cls(names, ids, tuple(names.index(body_types[i]) for i in ids))

    def fold(self, imagenet_probs: np.ndarray) -> np.ndarray:
        """(..., 1000) ImageNet softmax -> (..., n_body_types) probabilities summing to 1."""
        probs = np.asarray(imagenet_probs, dtype=np.float64)[..., list(self.imagenet_ids)]
        folded = np.zeros(probs.shape[:-1] + (len(self.class_names),))
        for position, column in enumerate(self.columns):
            folded[..., column] += probs[..., position]
        return folded / (folded.sum(axis=-1, keepdims=True) + EPSILON)

    def imagenet_id_for(self, imagenet_probs: np.ndarray, column: int) -> int:
        """The single ImageNet id behind body type ``column`` with the most probability (for Grad-CAM)."""
        candidates = [i for i, c in zip(self.imagenet_ids, self.columns) if c == column]
        return max(candidates, key=lambda i: float(imagenet_probs[i]))


BODY_TYPE_MAP = BodyTypeMap.from_body_types(BODY_TYPES)
