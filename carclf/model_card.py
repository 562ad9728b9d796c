"""What a trained bundle is, in words: classes, backbone, score, data, TTA, calibration, gate, versions.

Read from ``meta.json`` alone (no model load), so the sidebar can show it on every page and
``python -m carclf bundle info`` answers at once. A hand-edited or older meta.json only loses the rows it
cannot read; ``show_paths=False`` (public mode) names the training folder, never its server path.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Mapping, Optional

from carclf.calibration import Calibration, uncertain_threshold
from carclf.gate import DEFAULT_THRESHOLD
from carclf.run_summary import headline_text, positive_count as _count
from carclf.tta import own_tta

# Class names listed before "and N more".
MAX_CLASSES_SHOWN = 12


def model_card(meta: Mapping[str, Any], show_paths: bool = True) -> list[tuple[str, str]]:
    """(label, text) rows describing a bundle, in reading order; rows whose fields are missing are left out."""
    rows = [
        ("Classes", _classes(meta)),
        ("Backbone", _backbone(meta)),
        ("Validation", _validation(meta)),
        ("Trained on", _data(meta.get("data_summary"), show_paths)),
        ("Run", _run(meta)),
        ("TTA", _tta(meta)),
        ("Calibration", _calibration(meta)),
        ("Not sure below", _not_sure(meta)),
        ("Car gate", _gate(meta)),
        ("Versions", _versions(meta.get("versions"))),
    ]
    return [(label, text) for label, text in rows if text]


def card_text(meta: Mapping[str, Any], show_paths: bool = True) -> str:
    """The card as aligned plain-text lines (the CLI's output)."""
    rows = model_card(meta, show_paths)
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label + ':':<{width + 1}} {text}" for label, text in rows)


def _classes(meta: Mapping) -> str:
    names = meta.get("display_names") or meta.get("class_names")
    if not isinstance(names, list) or not names:
        return ""
    names = [str(name) for name in names]
    shown = ", ".join(names[:MAX_CLASSES_SHOWN])
    more = len(names) - MAX_CLASSES_SHOWN
    return f"{len(names)}: {shown}" + (f" and {more} more" if more > 0 else "")


def _backbone(meta: Mapping) -> str:
    backbone, size = meta.get("backbone"), meta.get("img_size")
    if not isinstance(backbone, str):
        return ""
    return f"{backbone} at {size} px" if _count(size) else backbone


def _validation(meta: Mapping) -> str:
    metrics = meta.get("val_metrics")
    score = headline_text(metrics) if isinstance(metrics, Mapping) else ""
    if not score:
        return ""
    photos = _count(metrics.get("val_images"))
    return f"{score} on {photos} photos" if photos else score


def _data(summary: Optional[Mapping], show_paths: bool) -> str:
    if not isinstance(summary, Mapping):
        return ""
    parts = []
    total, train, val = (_count(summary.get(key)) for key in ("num_images", "train_images", "val_images"))
    if total:
        parts.append(f"{total} photos" + (f" ({train} train, {val} validation)" if train and val else ""))
    root = summary.get("root")
    if isinstance(root, str) and root:
        parts.append(f"from {root if show_paths else PurePath(root).name}")
    if isinstance(summary.get("layout"), str):
        parts.append(f"({summary['layout']} layout)")
    fixes = [f"{_count(summary.get(key))} {key}" for key in ("excluded", "relabelled") if _count(summary.get(key))]
    if fixes:
        parts.append("after the doctor's decisions: " + ", ".join(fixes))
    return " ".join(parts)


def _run(meta: Mapping) -> str:
    run_id, created = meta.get("run_id"), meta.get("created_at")
    parts = [str(run_id)] if isinstance(run_id, str) and run_id else []
    if isinstance(created, str) and created:
        parts.append(f"saved {created[:16].replace('T', ' ')} UTC" if created.endswith("+00:00") else f"saved {created}")
    return ", ".join(parts)


def _tta(meta: Mapping) -> str:
    views = own_tta(meta)
    return "off (the photo alone)" if views <= 1 else f"{views} views by default"


def _calibration(meta: Mapping) -> str:
    calibration = Calibration.from_meta(meta)
    if calibration is None:
        return "none (probabilities as the model gives them)"
    fitted = [f"T {t:.2f} ({'no TTA' if v == 1 else f'{v} views'})"
              for v, t in sorted(calibration.temperatures.items()) if t != 1.0]
    return "temperature " + ", ".join(fitted) if fitted else calibration.skipped_reason(1)


def _not_sure(meta: Mapping) -> str:
    threshold = uncertain_threshold(meta)
    return "" if threshold is None else f"{threshold:.0%} calibrated top probability"


def _gate(meta: Mapping) -> str:
    threshold = meta.get("gate_threshold")
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return f"car score threshold {threshold:.2f} (tuned for this model)"
    return f"car score threshold {DEFAULT_THRESHOLD:.2f} (the default)"


def _versions(versions: Any) -> str:
    if not isinstance(versions, Mapping):
        return ""
    return ", ".join(f"{name} {version}" for name, version in versions.items() if isinstance(version, str))

