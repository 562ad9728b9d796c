"""Inference bundles: the layout of ``models/<name>/`` and nothing else.

A bundle is what training hands to inference: the Keras model (no optimizer state, so it is small and
loads in safe mode), the class folder names in output order, and a ``meta.json`` that says how it was made.
This is the only module that builds paths inside a bundle folder; the dashboard and the predictor go
through ``load_bundle`` / ``list_bundles`` / ``read_bundle_meta``.

A bundle is written into a hidden temporary folder and renamed into place, so a reader never sees a
half-written one. TensorFlow is imported only by the functions that need a model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from carclf.atomic import atomic_write_text
from carclf.clock import now_iso
from carclf.errors import BundleError
from carclf.names import check_id, is_safe_id, safe_id

# File names inside a bundle folder.
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
META_FILE = "meta.json"
# A file in the models folder whose single line names the bundle used when none is chosen.
DEFAULT_MARKER = "DEFAULT"
# Bumped when the bundle layout changes incompatibly; load_bundle refuses other versions.
BUNDLE_FORMAT = 1
# Prefix of the temporary folder a bundle is written into before the atomic rename.
TEMP_PREFIX = ".tmp-"
# Keys every meta.json has (filled with None when the caller does not know them).
META_KEYS = (
    "format", "name", "backbone", "img_size", "class_names", "display_names", "num_classes",
    "val_metrics", "run_id", "data_summary", "gate_threshold", "created_at", "versions",
)
# Permissions of a finished bundle folder (mkdtemp creates 0700).
BUNDLE_DIR_MODE = 0o755
# Keras dtype policies named like this compute in float16/bfloat16: bundles are saved computing in float32.
MIXED_PREFIX = "mixed_"
# Bundle names become folder names: letters, digits, dot, dash, underscore; must start alphanumeric.


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: the model plus the names needed to read its outputs."""

    model: Any  # keras.Model
    meta: dict
    class_names: list
    display_names: list
    path: Path

    @property
    def img_size(self) -> int:
        """Square input size the model expects (raw RGB 0..255)."""
        return int(self.meta["img_size"])


@dataclass(frozen=True)
class BundleInfo:
    """A bundle found on disk, described without loading TensorFlow (for listings)."""

    name: str
    path: Path
    meta: dict
    is_default: bool

    @property
    def created_at(self) -> str:
        return str(self.meta.get("created_at") or "")


def check_bundle_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name (carclf.names), else raise ``BundleError``."""
    return check_id(name, "bundle", BundleError)


def safe_bundle_name(text: str) -> str:
    """Turn any user text (a run name) into a valid bundle name."""
    return safe_id(text, fallback="model")


def save_bundle(
    model,
    out_dir,
    class_names: Sequence[str],
    display_names: Optional[Sequence[str]] = None,
    meta: Optional[dict] = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` and its labels as a bundle at ``out_dir`` and return the final path.

    The optimizer state is dropped (``inference_model``: a fresh functional model, float32 even when trained
    under mixed precision), so the file holds only what inference needs. ``meta`` may hold any of
    ``META_KEYS``; unknown keys are kept.
    """
    out_dir = Path(out_dir)
    check_bundle_name(out_dir.name)
    class_names = [str(name) for name in class_names]
    display_names = [str(name) for name in (display_names or class_names)]
    if not class_names:
        raise BundleError("cannot save a bundle without class names.")
    if len(display_names) != len(class_names):
        raise BundleError(
            f"{len(display_names)} display names for {len(class_names)} classes: give one per class."
        )
    num_outputs = int(model.outputs[0].shape[-1])
    if num_outputs != len(class_names):
        raise BundleError(f"the model has {num_outputs} outputs but {len(class_names)} class names were given.")
    if out_dir.exists() and not overwrite:
        raise BundleError(f"{out_dir} already exists: choose another name or pass overwrite=True.")

    full_meta = _build_meta(model, out_dir.name, class_names, display_names, meta or {})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{out_dir.name}-", dir=out_dir.parent))
    try:
        inference_model(model).save(temp_dir / MODEL_FILE)
        _write_json(temp_dir / LABELS_FILE, class_names)
        _write_json(temp_dir / META_FILE, full_meta)
        os.chmod(temp_dir, BUNDLE_DIR_MODE)  # mkdtemp makes it private; a bundle is meant to be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(temp_dir, out_dir)
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
    return out_dir


def inference_model(model):
    """``model`` as an uncompiled functional model (no optimizer state) that computes in float32.

    A model trained under mixed precision keeps float32 variables but computes in float16, and its layers
    remember that policy when saved. A bundle serves on CPUs, where float16 is slow (no native kernels)
    and imprecise, so such a model is rebuilt from its config with every mixed policy replaced by float32
    and gets the trained weights copied in; any other model is returned sharing its layers.
    """
    import keras

    # model.input/output, not the .inputs/.outputs lists: a list-wrapped model returns a one-item list when
    # called inside another model (the predictor's combined model), not a tensor.
    plain = keras.Model(model.input, model.output, name=model.name)
    config = plain.get_config()
    float32_config = _float32_policies(config)
    if float32_config == config:
        return plain
    import carclf.backbones  # noqa: F401  registers carclf's custom layers, which from_config may meet

    rebuilt = keras.Model.from_config(float32_config)
    rebuilt.set_weights(plain.get_weights())
    return rebuilt


def _float32_policies(config):
    """A copy of a serialised Keras config with every ``mixed_*`` dtype policy replaced by float32."""
    if isinstance(config, list):
        return [_float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    inner = config.get("config")
    if (str(config.get("class_name", "")).endswith("DTypePolicy") and isinstance(inner, dict)
            and str(inner.get("name", "")).startswith(MIXED_PREFIX)):
        return {**config, "config": {**inner, "name": "float32"}}
    return {key: _float32_policies(value) for key, value in config.items()}


def read_bundle_meta(bundle_dir) -> dict:
    """Read and check ``meta.json`` and ``labels.json`` of a bundle without loading the model."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: no such bundle folder. Train a model first or pick one from models/.")
    missing = [name for name in (MODEL_FILE, LABELS_FILE, META_FILE) if not (bundle_dir / name).is_file()]
    if missing:
        raise BundleError(
            f"{bundle_dir} is not a complete bundle (missing {', '.join(missing)}): delete it and export it again."
        )
    meta = _read_json(bundle_dir / META_FILE)
    labels = _read_json(bundle_dir / LABELS_FILE)
    if not isinstance(meta, dict):
        raise BundleError(f"{bundle_dir / META_FILE} is not a JSON object: export the bundle again.")
    if meta.get("format") != BUNDLE_FORMAT:
        raise BundleError(
            f"{bundle_dir} has bundle format {meta.get('format')!r}, this carclf reads format {BUNDLE_FORMAT}: "
            "retrain or re-export it with this version."
        )
    if not isinstance(labels, list) or not labels or labels != meta.get("class_names"):
        raise BundleError(f"{bundle_dir}: labels.json does not match meta.json: export the bundle again.")
    for key in ("img_size", "backbone"):
        if meta.get(key) is None:
            raise BundleError(f"{bundle_dir / META_FILE} lacks {key!r}: export the bundle again.")
    _check_meta_types(bundle_dir / META_FILE, meta)
    return meta


def _check_meta_types(path: Path, meta: dict) -> None:
    """The values code reads as numbers are numbers: a hand-edited meta.json gets one line, not a traceback."""
    size = meta["img_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise BundleError(f"{path}: img_size must be a positive whole number, not {size!r}: export the bundle again.")
    from carclf.gate import GATE_META_KEY

    gate = meta.get(GATE_META_KEY)
    if gate is not None and (isinstance(gate, bool) or not isinstance(gate, (int, float)) or not 0 <= gate <= 1):
        raise BundleError(f"{path}: {GATE_META_KEY} must be a number from 0 to 1, not {gate!r}: fix it, or export "
                          "the bundle again.")


def load_bundle(bundle_dir) -> Bundle:
    """Load a bundle in Keras safe mode and check that the model matches its labels and input size."""
    import keras  # heavy: only when loading

    import carclf.backbones  # noqa: F401  registers carclf's custom layers, needed to load in safe mode

    bundle_dir = Path(bundle_dir)
    meta = read_bundle_meta(bundle_dir)
    if not zipfile.is_zipfile(bundle_dir / MODEL_FILE):  # Keras would say "File not found" about a cut-off file
        raise BundleError(f"{bundle_dir / MODEL_FILE} cannot be loaded: it is damaged or truncated (not a complete "
                          ".keras archive); retrain or re-export it.")
    try:
        model = keras.saving.load_model(bundle_dir / MODEL_FILE, compile=False, safe_mode=True)
    except (ValueError, TypeError, OSError, KeyError) as error:
        raise BundleError(
            f"{bundle_dir / MODEL_FILE} cannot be loaded ({_first_line(error)}): it is damaged or was made by an "
            "incompatible version; retrain or re-export it."
        ) from error
    class_names = list(meta["class_names"])
    num_outputs = int(model.outputs[0].shape[-1])
    if num_outputs != len(class_names):
        raise BundleError(
            f"{bundle_dir}: the model has {num_outputs} outputs but the bundle lists {len(class_names)} classes: "
            "export the bundle again."
        )
    input_shape = tuple(model.inputs[0].shape[1:])
    img_size = int(meta["img_size"])
    if input_shape[-1] != 3 or any(side not in (None, img_size) for side in input_shape[:2]):
        raise BundleError(f"{bundle_dir}: model input {input_shape} does not match img_size {img_size} in meta.json: "
                          "export the bundle again.")
    display_names = list(meta.get("display_names") or class_names)
    return Bundle(model=model, meta=meta, class_names=class_names, display_names=display_names, path=bundle_dir)


def list_bundles(models_dir="models") -> list[BundleInfo]:
    """Complete bundles in ``models_dir``: the default one first, then newest first. Broken ones are skipped."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    default_name = _read_default_name(models_dir)
    found = []
    for child in models_dir.iterdir():
        if not child.is_dir() or child.name.startswith("."):
            continue
        try:
            meta = read_bundle_meta(child)
        except BundleError:
            continue  # partial or foreign folder: not offered for use
        found.append(BundleInfo(name=child.name, path=child, meta=meta, is_default=child.name == default_name))
    found.sort(key=lambda info: info.created_at, reverse=True)
    found.sort(key=lambda info: not info.is_default)  # stable: default first, then newest first
    return found


def default_bundle(models_dir="models") -> Optional[Path]:
    """The bundle to use when none is named: the one in ``models/DEFAULT``, else the newest, else None."""
    bundles = list_bundles(models_dir)
    return bundles[0].path if bundles else None


def set_default_bundle(models_dir, name: str) -> Path:
    """Mark bundle ``name`` as the default by writing ``models/DEFAULT`` (atomically)."""
    models_dir = Path(models_dir)
    check_bundle_name(name)
    read_bundle_meta(models_dir / name)  # refuse to point at a broken bundle
    atomic_write_text(models_dir / DEFAULT_MARKER, name + "\n")
    return models_dir / name


def delete_bundle(models_dir, name: str) -> None:
    """Remove bundle ``name``; clear the DEFAULT marker if it pointed at it."""
    models_dir = Path(models_dir)
    path = models_dir / check_bundle_name(name)
    if not path.is_dir():
        raise BundleError(f"no bundle named {name!r} in {models_dir}.")
    shutil.rmtree(path)
    if _read_default_name(models_dir) == name:
        (models_dir / DEFAULT_MARKER).unlink(missing_ok=True)


def _build_meta(model, name: str, class_names: list, display_names: list, extra: dict) -> dict:
    """meta.json content: known keys first (None when unknown), then the caller's extra keys."""
    import keras
    import tensorflow as tf

    from carclf import __version__

    meta: dict[str, Any] = {key: None for key in META_KEYS}
    meta.update(extra)
    input_side = model.inputs[0].shape[1]
    meta.update(
        format=BUNDLE_FORMAT,
        name=name,
        class_names=class_names,
        display_names=display_names,
        num_classes=len(class_names),
        img_size=int(extra.get("img_size") or input_side),
        created_at=extra.get("created_at") or now_iso(),
        versions={"carclf": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    )
    return meta


def _read_default_name(models_dir: Path) -> Optional[str]:
    marker = models_dir / DEFAULT_MARKER
    if not marker.is_file():
        return None
    name = marker.read_text(encoding="utf-8").strip()
    return name if is_safe_id(name) else None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}): export the bundle again.") from error


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
