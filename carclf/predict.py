"""``carclf.load_model`` and the ``Predictor``: the one way to ask a model about photos.

The dashboard, the CLI, evaluation and the benchmarks all go through here, so they see the same answers:
photos read by the safe loader, TTA views rendered and averaged by ``carclf.tta.score_photos`` (the same
scoring as training's final TTA score), the classifier and the car gate run together in ONE traced call per
few photos (``carclf.inference``), answers labelled with display names. ``tta`` counts the views averaged
(1 = off); left out, it is the model's own (``default_tta``: the views its validation score used).
Probabilities are calibrated with the bundle's temperature for the views averaged (``carclf.calibration``)
everywhere they are shown or written; a bundle without one answers exactly as before.
A Predictor wraps either a trained bundle (``kind="trained"``) or the built-in default model
(``kind="default"``: ImageNet body types, see ``carclf.default_model``).
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from carclf import default_model
from carclf.calibration import Calibration, apply_temperature, is_uncertain, uncertain_threshold
from carclf.gate import CarGate, car_score
from carclf.images import ImageSource, describe_source, load_image
from carclf.results import Prediction, ViewResult, top_k_labels
from carclf.tta import OFF, PhotoScore, ViewBatch, own_tta, score_photos, tta_views, view_count

# Where bundles live when ``load_model()`` is called without a path (relative to the working directory).
MODELS_DIR = "models"

# The key in a bundle's meta.json that may list its own TTA view names (see carclf.tta.VIEWS).
TTA_VIEWS_META_KEY = "tta_views"

# The top_k a result carries when the caller does not say.
DEFAULT_TOP_K = 3

# progress(done, total) after each chunk of predict_batch.
Progress = Callable[[int, int], None]

KIND_TRAINED = "trained"
KIND_DEFAULT = "default"


class Predictor:
    """A loaded model that answers ``predict`` / ``predict_batch`` / ``explain``. Get one from ``load_model``."""

    def __init__(
        self,
        name: str,
        kind: str,
        classifier,
        gate_classifier,
        class_names: Sequence[str],
        display_names: Sequence[str],
        meta: Optional[dict] = None,
        path: Optional[Path] = None,
        notice: Optional[str] = None,
    ):
        from carclf.inference import InferenceFunction, model_input_size

        self.name = name
        self.kind = kind
        self.path = path
        self.meta = dict(meta or {})
        self.notice = notice
        self.class_names = tuple(str(n) for n in class_names)  # folder names / category ids, output order
        self.display_names = tuple(str(n) for n in display_names)  # what results show
        self.gate = CarGate.from_meta(self.meta)
        # Which TTA views, in which order (None = carclf.tta.DEFAULT_ORDER); callers may reassign it.
        self.tta_view_names: Optional[tuple[str, ...]] = tuple(self.meta.get(TTA_VIEWS_META_KEY) or ()) or None
        # The views averaged when a caller does not say: those the model's validation score was measured with.
        self.default_tta = own_tta(self.meta)
        # Temperatures by views averaged (None: no calibration, probabilities as the model gives them), and
        # the calibrated top probability under which an answer is "not sure" (None: never).
        self.calibration = Calibration.from_meta(self.meta)
        self.uncertain_below = uncertain_threshold(self.meta)
        self.classifier = classifier  # None for the default model (it reads the gate's ImageNet output)
        self.gate_classifier = gate_classifier
        # One traced call returns class probabilities and the gate's ImageNet probabilities together.
        self.inference = InferenceFunction(classifier, gate_classifier)
        # The size predict_arrays callers should prepare images at (the classifier's own input size).
        self.img_size = model_input_size(classifier if classifier is not None else gate_classifier)
        self._classes_only = None  # classifier-only traced function for predict_arrays, built on first use

    def __repr__(self) -> str:
        return f"Predictor(name={self.name!r}, kind={self.kind!r}, classes={len(self.class_names)})"

    @property
    def gate_threshold(self) -> float:
        return self.gate.threshold

    # --- raw arrays -------------------------------------------------------------------------------------
    def _class_probs(self, outputs: dict) -> np.ndarray:
        if self.classifier is None:
            return default_model.BODY_TYPE_MAP.fold(outputs["imagenet"])
        return np.asarray(outputs["classes"], dtype=np.float64)

    def score_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class probabilities (N, C), car scores (N,))`` for an (N, H, W, 3) uint8 batch, in one call."""
        outputs = self.inference(batch)
        return self._class_probs(outputs), car_score(outputs["imagenet"])

    def _score_views(self, batch: ViewBatch) -> tuple[np.ndarray, np.ndarray]:
        """``score_photos``' scorer: every view's class probabilities, the gate's score of each photo alone."""
        if self.classifier is None:  # the default model reads its classes from the gate's output
            imagenet = self.inference(batch.views)["imagenet"]
            return self._class_probs({"imagenet": imagenet}), car_score(imagenet[batch.starts])
        outputs = self.inference(batch.views, batch.gate_views)
        return self._class_probs(outputs), car_score(outputs["imagenet"])

    def views_for(self, tta: Optional[int] = None) -> int:
        """The views ``tta`` asks for (1 = off, 0 read as 1); None: the model's own (``default_tta``)."""
        return view_count(self.default_tta if tta is None else tta)

    def _score_photos(self, images: list, tta: Optional[int], progress: Optional[Progress] = None) -> list:
        gate_size = None if self.classifier is None else self.inference.gate_size
        return score_photos(self._score_views, images, self.views_for(tta), self.img_size, self.tta_view_names,
                            gate_size=gate_size, progress=progress)

    def temperature_for(self, views: int) -> Optional[float]:
        """The temperature of a prediction averaging ``views`` views; None when none applies: the bundle has
        no calibration, or training skipped the fit (stored as T 1, which changes nothing)."""
        if self.calibration is None:
            return None
        temperature = self.calibration.temperature_for(view_count(views))
        return None if temperature == 1.0 else temperature

    def calibration_skipped(self, views: int) -> Optional[str]:
        """Why a bundle that went through calibration has no temperature for ``views`` views (None otherwise)."""
        return None if self.calibration is None else self.calibration.skipped_reason(view_count(views))

    def calibrate(self, probabilities: np.ndarray, views: int) -> np.ndarray:
        """Raw class probabilities (N, C) or (C,) averaged over ``views`` views, calibrated (float64)."""
        return apply_temperature(probabilities, self.temperature_for(views))

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """RAW class probabilities (N, C) for a prepared (N, H, W, 3) uint8 batch (any H, W; resized inside):
        pass them through ``calibrate(p, 1)`` before showing them.

        For evaluation and submission fed by tf.data: no TTA and no gate, so a trained model runs alone.
        """
        if self.classifier is None:
            return self.score_arrays(batch)[0]
        if self._classes_only is None:
            from carclf.inference import InferenceFunction

            self._classes_only = InferenceFunction(self.classifier, None)
        return np.asarray(self._classes_only(batch)["classes"], dtype=np.float64)

    # --- photos -----------------------------------------------------------------------------------------
    def predict(self, image: ImageSource, tta: Optional[int] = None, top_k: int = DEFAULT_TOP_K) -> Prediction:
        """Classify one photo (path, bytes, file object, PIL image or HxWx3 uint8) averaging ``tta`` views
        (1 = off; None = the model's own). Raises ``ImageError`` when the photo cannot be read.
        """
        scored = self._score_photos([image], tta)[0]
        if scored.error is not None:
            raise scored.error
        return self._result(describe_source(image), scored, top_k)

    def predict_batch(
        self,
        images: Iterable[ImageSource],
        tta: Optional[int] = None,
        top_k: int = DEFAULT_TOP_K,
        progress: Optional[Progress] = None,
    ) -> list[Prediction]:
        """Classify many photos (``tta`` as in ``predict``), batching their views into few model calls.

        An unreadable photo gives a result with ``error`` set instead of stopping the batch.
        """
        images = list(images)
        return [
            self._result(describe_source(image), scored, top_k) if scored.ok
            else Prediction(source=describe_source(image), model_name=self.name, error=str(scored.error))
            for image, scored in zip(images, self._score_photos(images, tta, progress))
        ]

    def _result(self, source, scored: PhotoScore, top_k: int) -> Prediction:
        """One photo's TTA answer as a Prediction, keeping each view's vote (each view calibrated as one look,
        the average with the temperature of its number of views)."""
        probs = self.calibrate(scored.view_probabilities, OFF)
        raw = scored.probabilities
        mean = self.calibrate(raw, len(scored.names))
        best = int(np.argmax(mean))
        views = [
            ViewResult(name, self.display_names[int(np.argmax(p))], float(p.max()), tuple(float(v) for v in p))
            for name, p in zip(scored.names, probs)
        ]
        return Prediction(
            source=source,
            label=self.display_names[best],
            probability=float(mean[best]),
            top_k=top_k_labels(mean, self.display_names, top_k),
            probabilities=tuple(float(v) for v in mean),
            is_car=self.gate.is_car(scored.photo_score),
            car_score=scored.photo_score,
            views=views,
            tta_changed_answer=int(np.argmax(probs[0])) != best,
            model_name=self.name,
            notice=self.notice,
            uncertain=is_uncertain(float(mean[best]), self.uncertain_below),
            temperature=self.temperature_for(len(scored.names)),
            raw_probabilities=tuple(float(v) for v in raw),
        )

    # --- explanation ------------------------------------------------------------------------------------
    def explain(self, image: ImageSource, class_index: Optional[int] = None):
        """``(heatmap, overlay)``: Grad-CAM of the predicted class (or ``class_index``) over the photo.

        ``heatmap`` is an HxW float32 array in 0..1 at the photo's size (at most
        ``carclf.saliency.MAX_OVERLAY_SIDE`` px on the longer side), ``overlay`` a PIL image of that size.
        """
        from carclf.saliency import grad_cam

        picture = load_image(image)
        if self.classifier is not None:
            if class_index is None:
                class_index = int(np.argmax(self.predict(picture, tta=OFF).probabilities))
            return grad_cam(self.classifier, picture, class_index)
        # Default model: explain the ImageNet class behind the predicted body type.
        views, _ = tta_views(picture, OFF, self.inference.input_size)
        imagenet = self.inference(views)["imagenet"][0]
        column = int(np.argmax(default_model.BODY_TYPE_MAP.fold(imagenet))) if class_index is None else class_index
        return grad_cam(self.gate_classifier, picture, default_model.BODY_TYPE_MAP.imagenet_id_for(imagenet, column))


# --- loading -----------------------------------------------------------------------------------------------
_CACHE: dict[tuple, Predictor] = {}
_CACHE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def gate_classifier():
    """The pretrained ImageNet classifier shared by the gate and the default model (built once per process)."""
    from carclf.backbones import build_imagenet_classifier

    return build_imagenet_classifier(default_model.DEFAULT_BACKBONE)


def load_model(path: Optional[str | Path] = None, models_dir: str | Path = MODELS_DIR) -> Predictor:
    """Load a Predictor, cached per process (keyed by path and modification time).

    ``path`` is a bundle folder, ``"default"`` for the built-in default model, or None for the bundle
    marked default / the newest bundle in ``models_dir``, falling back to the default model when there is
    none. A missing, partial or incompatible bundle raises ``BundleError``.
    """
    from carclf.bundle import default_bundle

    if path is None:
        path = default_bundle(models_dir) or default_model.DEFAULT_MODEL_NAME
    if str(path) == default_model.DEFAULT_MODEL_NAME:
        key: tuple = (KIND_DEFAULT,)
        factory = _load_default
    else:
        bundle_dir = Path(path).resolve()
        key = (KIND_TRAINED, str(bundle_dir), _bundle_mtime(bundle_dir))
        factory = functools.partial(_load_trained, bundle_dir)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = factory()
        return _CACHE[key]


def model_tta(path: Optional[str | Path] = None, models_dir: str | Path = MODELS_DIR) -> int:
    """A model's own TTA (``Predictor.default_tta``) read from its meta.json without loading it, so a page can
    show it before the model is needed. ``path`` as in ``load_model``; the default model's is 1 (off)."""
    from carclf.bundle import default_bundle, read_bundle_meta

    if path is None:
        path = default_bundle(models_dir) or default_model.DEFAULT_MODEL_NAME
    if str(path) == default_model.DEFAULT_MODEL_NAME:
        return OFF
    return own_tta(read_bundle_meta(Path(path)))


def clear_cache() -> None:
    """Forget loaded models (tests; the dashboard after deleting a bundle)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _bundle_mtime(bundle_dir: Path) -> float:
    """Newest modification time of the bundle's files (0 when missing: load_bundle then says what is wrong)."""
    from carclf.bundle import LABELS_FILE, META_FILE, MODEL_FILE

    files = [bundle_dir / name for name in (MODEL_FILE, LABELS_FILE, META_FILE)]
    return max((path.stat().st_mtime for path in files if path.is_file()), default=0.0)


def _load_trained(bundle_dir: Path) -> Predictor:
    from carclf.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    return Predictor(
        name=bundle_dir.name,
        kind=KIND_TRAINED,
        classifier=bundle.model,
        gate_classifier=gate_classifier(),
        class_names=bundle.class_names,
        display_names=bundle.display_names,
        meta=bundle.meta,
        path=bundle_dir,
    )


def _load_default() -> Predictor:
    names = default_model.BODY_TYPE_MAP.class_names
    return Predictor(
        name=default_model.DEFAULT_MODEL_NAME,
        kind=KIND_DEFAULT,
        classifier=None,
        gate_classifier=gate_classifier(),
        class_names=names,
        display_names=names,
        meta={"backbone": default_model.DEFAULT_BACKBONE},
        notice=default_model.NOTICE,
    )


__all__ = ["Predictor", "load_model", "model_tta", "clear_cache", "gate_classifier"]
