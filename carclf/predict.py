"""``carclf.load_model`` and the ``Predictor``: the one way to ask a model about photos.

The dashboard, the CLI, evaluation and the benchmarks all go through here, so they see the same answers:
photos read by the safe loader, TTA views rendered by ``carclf.tta``, the classifier and the car gate run
together in ONE traced call per photo (``carclf.inference``), averaged and labelled with display names.
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
from carclf.errors import ImageError
from carclf.gate import CarGate, car_score
from carclf.images import ImageSource, describe_source, load_image
from carclf.results import Prediction, ViewResult, top_k_labels
from carclf.tta import tta_views

# Where bundles live when ``load_model()`` is called without a path (relative to the working directory).
MODELS_DIR = "models"

# TTA views (images) per model call in predict_batch. Measured with the default model on 2 cores: 22.6,
# 21.0, 19.5 and 26.1 ms per image at 1, 8, 16 and 32 per call (bigger batches fall out of the CPU
# caches), and peak RSS 0.9 / 1.1 / 1.5 GB at 16 / 32 / 64 per call.
VIEWS_PER_CALL = 16

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

    def score_arrays(self, batch: np.ndarray, gate_rows=None) -> tuple[np.ndarray, np.ndarray]:
        """``(class probabilities (N, C), car scores)`` for an (N, H, W, 3) uint8 batch, in one call.

        Car scores are for the rows in ``gate_rows`` (default: every row). The default model reads its
        classes from the gate's ImageNet output, so there the gate always sees every row.
        """
        if self.classifier is None:
            outputs = self.inference(batch)
            rows = slice(None) if gate_rows is None else np.asarray(gate_rows)
            return self._class_probs(outputs), car_score(outputs["imagenet"][rows])
        outputs = self.inference(batch, gate_rows)
        return self._class_probs(outputs), car_score(outputs["imagenet"])

    def predict_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) for a prepared (N, H, W, 3) uint8 batch (any H, W; resized inside).

        For evaluation and submission fed by tf.data: no TTA and no gate, so a trained model runs alone.
        """
        if self.classifier is None:
            return self.score_arrays(batch)[0]
        if self._classes_only is None:
            from carclf.inference import InferenceFunction

            self._classes_only = InferenceFunction(self.classifier, None)
        return np.asarray(self._classes_only(batch)["classes"], dtype=np.float64)

    # --- photos -----------------------------------------------------------------------------------------
    def predict(self, image: ImageSource, tta: int = 1, top_k: int = DEFAULT_TOP_K) -> Prediction:
        """Classify one photo (path, bytes, file object, PIL image or HxWx3 uint8) with ``tta`` views.

        Raises ``ImageError`` when the photo cannot be read.
        """
        views, names = tta_views(image, tta, self.inference.input_size, self.tta_view_names)
        probs, scores = self.score_arrays(views, gate_rows=[0])  # the gate judges the unaltered photo
        return self._result(describe_source(image), names, probs, float(scores[0]), top_k)

    def predict_batch(
        self,
        images: Iterable[ImageSource],
        tta: int = 1,
        top_k: int = DEFAULT_TOP_K,
        progress: Optional[Progress] = None,
    ) -> list[Prediction]:
        """Classify many photos, batching their views into few model calls.

        An unreadable photo gives a result with ``error`` set instead of stopping the batch.
        """
        images = list(images)
        results: list[Optional[Prediction]] = [None] * len(images)
        pending: list[tuple[int, np.ndarray, tuple[str, ...]]] = []
        done = 0

        def flush():
            nonlocal done
            if not pending:
                return
            starts = np.cumsum([0] + [len(views) for _, views, _ in pending])
            probs, scores = self.score_arrays(np.concatenate([views for _, views, _ in pending]), starts[:-1])
            for number, (index, views, names) in enumerate(pending):
                start, stop = starts[number], starts[number + 1]
                results[index] = self._result(
                    describe_source(images[index]), names, probs[start:stop], float(scores[number]), top_k
                )
            done += len(pending)
            pending.clear()
            if progress:
                progress(done, len(images))

        for index, image in enumerate(images):
            try:
                views, names = tta_views(image, tta, self.inference.input_size, self.tta_view_names)
            except ImageError as error:
                results[index] = Prediction(source=describe_source(image), model_name=self.name, error=str(error))
                done += 1
                continue
            pending.append((index, views, names))
            if sum(len(v) for _, v, _ in pending) >= VIEWS_PER_CALL:
                flush()
        flush()
        if progress and done < len(images):
            progress(len(images), len(images))
        return results  # type: ignore[return-value]

    def _result(self, source, names, probs: np.ndarray, score: float, top_k: int) -> Prediction:
        """Average the views of one photo into a Prediction, keeping each view's vote."""
        mean = probs.mean(axis=0)
        best = int(np.argmax(mean))
        views = [
            ViewResult(name, self.display_names[int(np.argmax(p))], float(p.max()), tuple(float(v) for v in p))
            for name, p in zip(names, probs)
        ]
        return Prediction(
            source=source,
            label=self.display_names[best],
            probability=float(mean[best]),
            top_k=top_k_labels(mean, self.display_names, top_k),
            probabilities=tuple(float(v) for v in mean),
            is_car=self.gate.is_car(score),
            car_score=score,
            views=views,
            tta_changed_answer=int(np.argmax(probs[0])) != best,
            model_name=self.name,
            notice=self.notice,
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
                class_index = int(np.argmax(self.predict(picture, tta=1).probabilities))
            return grad_cam(self.classifier, picture, class_index)
        # Default model: explain the ImageNet class behind the predicted body type.
        views, _ = tta_views(picture, 1, self.inference.input_size)
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


__all__ = ["Predictor", "load_model", "clear_cache", "gate_classifier"]
