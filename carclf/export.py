"""Export a trained bundle as a TensorFlow SavedModel or a TFLite file, and prove the export still agrees.

Both artefacts take what the Keras model takes: raw RGB float32 0..255 of shape (N, S, S, 3), because the
normalisation is a layer inside the model; they return the class probabilities in ``labels.json`` order
(written beside the export). A conversion can silently change answers (float16 rounding, int8
quantisation, an op lowered differently), so every export is immediately run on real photos next to the
Keras model and the largest probability difference and top-1 agreement are written to ``parity.json``.

A bundle with a calibration (``carclf.calibration``) is exported with its no-TTA temperature inside the
graph (an artefact sees one photo at a time), so the artefact returns the same calibrated probabilities
as ``predict --tta 1``; the parity check compares it with the Keras model calibrated in numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from carclf.calibration import EPS, Calibration, apply_temperature
from carclf.errors import ConfigError, DataError, ImageError
from carclf.images import is_image_file, load_rgb_array

# Photos used for the parity check and int8 calibration when none are given: the package's own samples
# (licensed for redistribution, see resources/samples/LICENSE.md).
DEFAULT_PARITY_DIR = Path(__file__).parent / "resources" / "samples"

# At most this many photos are compared: a handful already shows a broken conversion, and each costs a
# model call on CPU.
MAX_PARITY_IMAGES = 16

# Files written beside every export.
PARITY_FILE = "parity.json"
LABELS_FILE = "labels.json"

# Name of the TFLite file when ``out`` is a folder.
TFLITE_FILE = "model.tflite"

# The file every SavedModel folder has: --overwrite replaces a folder only when it holds one.
SAVED_MODEL_MARKER = "saved_model.pb"


@dataclass(frozen=True)
class Quantization:
    """How a TFLite conversion shrinks the model, and how far its probabilities may drift from Keras."""

    name: str
    configure: Callable  # (converter, calibration batch float32 NxSxSx3) -> None
    tolerance: float  # largest acceptable |p_export - p_keras| on the parity photos
    min_top1_agreement: float  # smallest acceptable share of photos where both pick the same class


def _no_quantization(converter, calibration: np.ndarray) -> None:
    """float32 TFLite: the same numbers up to float rounding."""


def _float16(converter, calibration: np.ndarray) -> None:
    """Weights stored as float16: half the size, tiny drift."""
    import tensorflow as tf

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]


def _int8(converter, calibration: np.ndarray) -> None:
    """Weights and activations int8, calibrated on real photos; input and output stay float32 (raw RGB in)."""
    import tensorflow as tf

    def representative_dataset():
        for image in calibration:
            yield [image[np.newaxis].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset


# Quantization name -> spec. Measured with bench/bench_export.py on the pretrained EfficientNet-Lite0
# ImageNet classifier (16 real photos): float32 max |dp| 3e-6; float16 3.6e-3; int8 0.12 with 15/16 top-1
# agreement (a near-tie flips). Tolerances leave headroom above those; int8 may flip near-ties.
QUANTIZATIONS: dict[str, Quantization] = {
    spec.name: spec
    for spec in (
        Quantization("none", _no_quantization, tolerance=1e-4, min_top1_agreement=1.0),
        Quantization("float16", _float16, tolerance=2e-2, min_top1_agreement=1.0),
        Quantization("int8", _int8, tolerance=0.25, min_top1_agreement=0.85),
    )
}


@dataclass(frozen=True)
class ParityReport:
    """How closely the exported artefact reproduces the Keras model on real photos."""

    n_images: int
    max_abs_diff: float  # largest |p_export - p_keras| over all photos and classes
    mean_abs_diff: float
    top1_agreement: float  # fraction of photos where both pick the same class
    tolerance: float
    min_top1_agreement: float
    images: tuple  # file names of the photos compared

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.top1_agreement >= self.min_top1_agreement

    def to_dict(self) -> dict:
        return {**asdict(self), "images": list(self.images), "passed": self.passed}


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how it compares with the Keras model."""

    path: Path  # the SavedModel folder or the .tflite file
    format: str
    quantize: str
    size_bytes: int
    parity: ParityReport
    parity_path: Path
    temperature: Optional[float] = None  # the calibration inside the artefact (None: raw softmax)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "quantize": self.quantize,
            "size_bytes": self.size_bytes,
            "parity": self.parity.to_dict(),
            "parity_path": str(self.parity_path),
            "temperature": self.temperature,
        }


@dataclass(frozen=True)
class ExportFormat:
    """One export target: how to write it from a Keras model and how to run what was written."""

    name: str
    write: Callable  # (keras model, out path, Quantization, calibration batch) -> artefact path
    load_runner: Callable  # (artefact path) -> callable(float32 batch) -> probabilities
    quantizable: bool  # whether --quantize applies
    target: Callable  # (--out path) -> the artefact path written
    side_dir: Callable  # (artefact path) -> folder for parity.json / labels.json
    is_artefact: Callable  # (existing path) -> True when it is an earlier export that --overwrite may replace


def _write_savedmodel(model, target: Path, quantization: Quantization, calibration: np.ndarray) -> Path:
    model.export(str(target), format="tf_saved_model", verbose=False)
    return target


def _run_savedmodel(path: Path) -> Callable:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda batch: loaded.serve(tf.constant(batch, dtype=tf.float32)).numpy()


def _tflite_target(out: Path) -> Path:
    """``--out`` ending in .tflite is the file; anything else is a folder that gets model.tflite."""
    return out if out.suffix.lower() == ".tflite" else out / TFLITE_FILE


def _write_tflite(model, target: Path, quantization: Quantization, calibration: np.ndarray) -> Path:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="carclf-export-") as scratch:
        saved = Path(scratch) / "savedmodel"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        quantization.configure(converter, calibration)
        try:
            content = converter.convert()
        except (ValueError, RuntimeError) as error:  # the converter's own errors; anything else is a bug
            raise ConfigError(f"TFLite conversion ({quantization.name}) failed: {error}") from error
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


def _run_tflite(path: Path) -> Callable:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        interpreter = tf.lite.Interpreter(model_path=str(path))

    def run(batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        input_index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(input_index, list(batch.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, batch)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))

    return run


# Export format name -> spec.
FORMATS: dict[str, ExportFormat] = {
    spec.name: spec
    for spec in (
        ExportFormat("savedmodel", _write_savedmodel, _run_savedmodel, quantizable=False, target=lambda out: out,
                     side_dir=lambda path: path, is_artefact=lambda path: (path / SAVED_MODEL_MARKER).is_file()),
        ExportFormat("tflite", _write_tflite, _run_tflite, quantizable=True, target=_tflite_target,
                     side_dir=lambda path: path.parent, is_artefact=lambda path: path.is_file()),
    )
}


def export_model(
    model_dir,
    format: str,
    out,
    quantize: Optional[str] = None,
    parity_images=None,
    overwrite: bool = False,
    max_parity_images: int = MAX_PARITY_IMAGES,
) -> ExportResult:
    """Export the bundle at ``model_dir`` (or a loaded ``Bundle``) and check it against the Keras model.

    ``format`` is a key of ``FORMATS``; ``quantize`` a key of ``QUANTIZATIONS`` (TFLite only).
    ``parity_images`` is a folder or a list of image files (default: the package's sample photos); they
    also calibrate int8. Writes ``parity.json`` and ``labels.json`` beside the export.
    """
    spec = _lookup(FORMATS, format, "export format")
    quantization = _lookup(QUANTIZATIONS, quantize or "none", "quantization")
    if quantization.name != "none" and not spec.quantizable:
        raise ConfigError(f"--quantize applies to TFLite only; {spec.name} exports keep float32 weights.")
    bundle = _as_bundle(model_dir)
    target = spec.target(Path(out))
    writable_parent = next((folder for folder in target.parents if folder.exists()), None)
    if writable_parent is not None and not os.access(writable_parent, os.W_OK):  # else TensorFlow's own traceback
        raise ConfigError(f"{writable_parent} is not writable: choose another --out.")
    if target.exists():
        if not overwrite:
            raise ConfigError(f"{target} already exists: choose another --out or pass --overwrite.")
        if not spec.is_artefact(target):
            raise ConfigError(f"{target} exists and is not a {spec.name} export: it is not replaced; choose another --out.")
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    # A .tflite file's labels.json and parity.json go beside it: never over a folder's own files unasked
    # (a dataset's labels.json holds the user's class names).
    side = spec.side_dir(target)
    taken = [name for name in (LABELS_FILE, PARITY_FILE) if (side / name).exists()]
    if taken and not overwrite:
        raise ConfigError(f"{side} already holds {' and '.join(taken)}, which the export writes "
                          "beside the model: export into another folder, or pass --overwrite to replace them.")

    photos = parity_photo_paths(parity_images, max_parity_images)
    batch = np.stack([load_rgb_array(p, size=bundle.img_size) for p in photos]).astype(np.float32)
    temperature = export_temperature(bundle.meta)
    artefact = spec.write(calibrated_model(bundle.model, temperature), target, quantization, batch)
    parity = check_parity(bundle.model, spec.load_runner(artefact), batch, quantization, photos, temperature)

    side = spec.side_dir(artefact)
    parity_path = side / PARITY_FILE
    result = ExportResult(
        path=artefact,
        format=spec.name,
        quantize=quantization.name,
        size_bytes=_size(artefact),
        parity=parity,
        parity_path=parity_path,
        temperature=temperature,
    )
    (side / LABELS_FILE).write_text(json.dumps(list(bundle.class_names), indent=2) + "\n", encoding="utf-8")
    output = "class probabilities in labels.json order"
    if temperature is not None:
        output = f"calibrated {output} (temperature {temperature:.4g}, fitted without TTA)"
    record = {**result.to_dict(), "input": f"float32 raw RGB 0..255, shape (N, {bundle.img_size}, "
              f"{bundle.img_size}, 3)", "output": output}
    parity_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return result


def export_temperature(meta: dict) -> Optional[float]:
    """The temperature an export carries: the bundle's no-TTA one (None: no calibration, or T = 1)."""
    calibration = Calibration.from_meta(meta or {})
    temperature = None if calibration is None else calibration.temperature_for(1)
    return None if temperature in (None, 1.0) else temperature


def calibrated_model(model, temperature: Optional[float]):
    """``model`` followed by ``softmax(log(clip(p)) / T)`` in the graph; ``model`` itself when T is None."""
    if temperature is None:
        return model
    import keras

    image = keras.Input(model.inputs[0].shape[1:], name="image")
    probabilities = model(image)
    logits = keras.ops.log(keras.ops.clip(probabilities, EPS, 1.0)) / float(temperature)
    return keras.Model(image, keras.ops.softmax(logits, axis=-1), name=f"{model.name}_calibrated")


def check_parity(
    keras_model, run_export: Callable, batch: np.ndarray, quantization: Quantization, photos=(),
    temperature: Optional[float] = None,
) -> ParityReport:
    """Run the Keras model (calibrated in numpy with ``temperature``) and the exported artefact on the same
    batch and compare the probabilities."""
    expected = apply_temperature(np.asarray(keras_model.predict_on_batch(batch), dtype=np.float64), temperature)
    actual = np.asarray(run_export(batch), dtype=np.float64)
    if actual.shape != expected.shape:
        raise ConfigError(f"the export returns shape {actual.shape}, the Keras model {expected.shape}: a bug.")
    diff = np.abs(actual - expected)
    return ParityReport(
        n_images=len(batch),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float(np.mean(actual.argmax(axis=1) == expected.argmax(axis=1))),
        tolerance=quantization.tolerance,
        min_top1_agreement=quantization.min_top1_agreement,
        images=tuple(Path(p).name for p in photos),
    )


def parity_photo_paths(source=None, limit: int = MAX_PARITY_IMAGES) -> list:
    """Readable photos for the parity check: from a folder (recursively), a list of files, or the samples."""
    if source is None:
        source = DEFAULT_PARITY_DIR
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(f"{folder}: no such folder of parity photos. Give a folder of real photos.")
        candidates = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    else:
        candidates = [Path(p) for p in source]
    readable = []
    for path in candidates:
        try:
            load_rgb_array(path, size=8)
        except ImageError:
            continue  # a bad file among the parity photos is skipped, not fatal
        readable.append(path)
        if len(readable) >= limit:
            break
    if not readable:
        raise DataError(f"no readable photos in {source} for the parity check: give --parity-images DIR.")
    return readable


def _as_bundle(model_dir):
    """A loaded Bundle from a folder path (anything with ``.model`` and ``.class_names`` passes through)."""
    if hasattr(model_dir, "model") and hasattr(model_dir, "class_names"):
        return model_dir
    from carclf.bundle import load_bundle

    return load_bundle(model_dir)


def _lookup(registry: dict, name: str, what: str):
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choose from: {', '.join(registry)}.")
    return registry[name]


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
