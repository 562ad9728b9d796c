"""The data doctor: what is wrong with a labelled dataset, photo by photo, without changing a file.

``diagnose(DIR)`` scans the dataset as training sees it (``carclf.data.scan_dataset``, decisions file
applied), embeds every photo once (``carclf.embedding_cache``: features + the gate's ImageNet verdict in
one pass, cached by file content) and reports ``Finding``s of these kinds:

- ``unreadable``: the header check or the decoder refused the file;
- ``duplicate`` / ``near_duplicate``: the same picture twice in DIR (same decoded pixels / an edited copy:
  resized, recompressed, cropped a little, brightness changed), with the pair (``carclf.doctor_dupes``);
- ``leak``: a photo of DIR that is (nearly) the same picture as one in ``against`` (a test/validation folder);
- ``not_a_car``: the car gate's verdict (``carclf.gate``) at its threshold: logos, interiors, other objects;
- ``suspected_label``: the label the data contradicts, with a suggested class (``carclf.doctor_labels``);
- ``outlier_size``: tiny photos and extreme aspect ratios.
Class imbalance is in the summary. Fixes are decisions (``carclf.decisions``): ``fixes(report)`` turns
findings into them and ``apply_fixes`` writes them; the photos are never moved or deleted.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from carclf.atomic import atomic_write_text
from carclf.data import list_images, scan_dataset
from carclf.decisions import Decision, load_decisions, set_decisions
from carclf.doctor_labels import LabelCheck, check_labels
from carclf.errors import DataError

# Every kind of finding, in the order reports list them (most harmful to a model first).
KINDS = ("unreadable", "leak", "duplicate", "near_duplicate", "not_a_car", "suspected_label", "outlier_size")
# The fix each kind suggests: everything is excluded except label suspects, which are relabelled.
FIX_ACTIONS = {"unreadable": "exclude", "leak": "exclude", "duplicate": "exclude", "near_duplicate": "exclude",
               "not_a_car": "exclude", "suspected_label": "relabel", "outlier_size": "exclude"}
# Kinds ``apply_fixes`` writes by default: size outliers are often fine photos, so they need a person.
DEFAULT_APPLY_KINDS = ("unreadable", "leak", "duplicate", "near_duplicate", "not_a_car", "suspected_label")
# Label suspects fixed without a person only when the out-of-fold probability of their label is at most
# this (score >= 1 - it): on the brand benchmark about half of those were injected flips, against a
# fifth of all suspects; and they are excluded rather than relabelled by default, because the suggested
# class of a real flip was right only about half the time there (frozen ImageNet features tell car
# brands apart poorly). A person relabels with one click in the review grid. Worth it even where the label
# check is weak (2026-12-03, 3 brand cases of bench_doctor.py, quick on the test photos not leaked into
# train): 68.8 % with these exclusions, 50.0 % with every other fix but not these, 59.4 % with no fix.
AUTO_LABEL_MAX_CONFIDENCE = 0.05
# A photo whose shorter side is below this is too small to show a car's model (the backbone upsamples it).
TINY_SIDE = 64
# Longer side / shorter side beyond this: a banner, a strip, a panorama, not a car photo.
MAX_ASPECT = 3.0
# The summary flags class imbalance when the largest class has this many times the photos of the smallest.
IMBALANCE_RATIO = 3.0
# Report file names written by ``DoctorReport.save``.
REPORT_JSON = "doctor.json"
FINDINGS_CSV = "findings.csv"

DoctorProgress = Callable[[str, int, int], None]
"""Called as ``progress(stage, done, total)``; stages: "checking files", "embedding", "comparing", "labels"."""


@dataclass(frozen=True)
class Finding:
    """One problem with one photo. Paths are relative to the dataset root (``other`` of a leak: to ``against``)."""

    kind: str
    path: str
    score: float  # how bad, 0..1, larger first (per kind: see docs/DESIGN.md)
    label: str = ""  # the photo's class now (after the decisions file)
    other: str = ""  # the photo it duplicates (duplicate, near_duplicate, leak)
    suggested_label: str = ""  # suspected_label: the class the data points to
    detail: str = ""  # one line for people

    @property
    def fix(self) -> str:
        """The decision this finding suggests: "exclude" or "relabel"."""
        return FIX_ACTIONS[self.kind]

    def to_dict(self) -> dict:
        data = {"kind": self.kind, "path": self.path, "score": round(float(self.score), 4), "label": self.label,
                "detail": self.detail, "fix": self.fix}
        if self.other:
            data["other"] = self.other
        if self.suggested_label:
            data["suggested_label"] = self.suggested_label
        return data


@dataclass
class DoctorReport:
    """``diagnose``'s answer. ``to_json()`` is what ``python -m carclf doctor --json`` prints."""

    root: Path
    layout: str
    classes: tuple[str, ...]
    n_images: int  # photos looked at (after exclusions in the decisions file)
    findings: list[Finding]
    class_counts: dict[str, int]
    against: Optional[Path] = None
    n_against: int = 0
    gate_threshold: float = 0.0
    excluded: int = 0  # photos the decisions file already excludes (not looked at)
    relabelled: int = 0
    reviewed: int = 0  # findings hidden because the photo was marked "keep"
    timings: dict[str, float] = field(default_factory=dict)
    computed: int = 0  # photos embedded this run (the others came from the cache)
    # For the map and the review grid (not in the JSON): photo i is root / paths[i], labelled labels[i].
    paths: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    features: Optional[np.ndarray] = None  # (n_images, D) L2-normalised; zero rows for unreadable photos
    # How far the labels can be judged at all (``carclf.doctor_labels.LabelCheck.to_dict``): photos judged,
    # out-of-fold agreement with their labels, and whether it is too low for suspects to mean much.
    label_check: dict = field(default_factory=lambda: LabelCheck(0, None, []).to_dict())

    def by_kind(self, kind: str) -> list[Finding]:
        """The findings of one kind, worst first."""
        return [f for f in self.findings if f.kind == kind]

    def kinds_of(self, path: str) -> list[str]:
        """The kinds of finding about one photo (relative path)."""
        return [f.kind for f in self.findings if f.path == path]

    @property
    def imbalance(self) -> dict:
        """Largest and smallest class, their ratio, and whether it exceeds ``IMBALANCE_RATIO``."""
        counts = {k: v for k, v in self.class_counts.items()}
        if not counts:
            return {"ratio": 0.0, "largest": "", "smallest": "", "flagged": False}
        largest = max(counts, key=counts.get)
        smallest = min(counts, key=counts.get)
        ratio = counts[largest] / max(counts[smallest], 1)
        return {"ratio": round(ratio, 2), "largest": largest, "smallest": smallest,
                "flagged": bool(ratio >= IMBALANCE_RATIO)}

    @property
    def summary(self) -> dict[str, int]:
        """Findings per kind (every kind listed, zeros included)."""
        counts = {kind: 0 for kind in KINDS}
        for finding in self.findings:
            counts[finding.kind] += 1
        return counts

    @property
    def label_warning(self) -> Optional[str]:
        """What to tell a user when the label check is weak (None when the suspects can be taken as they are)."""
        check = self.label_check
        if not check.get("weak"):
            return None
        return (f"The photos' features agree with only {check['agreement']:.0%} of their {check['photos']} labels "
                f"out of fold (under {check['weak_below']:.0%}): they separate these classes poorly, so many label "
                "suspects are likely hard photos of the right class. Look at each before relabelling or excluding.")

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "against": str(self.against) if self.against else None,
            "n_images": self.n_images,
            "n_against": self.n_against,
            "classes": list(self.classes),
            "class_counts": self.class_counts,
            "imbalance": self.imbalance,
            "summary": self.summary,
            "label_check": self.label_check,
            "gate_threshold": self.gate_threshold,
            "excluded": self.excluded,
            "relabelled": self.relabelled,
            "reviewed": self.reviewed,
            "computed": self.computed,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def save(self, out_dir: Union[str, Path]) -> Path:
        """Write ``doctor.json`` and ``findings.csv`` (one row per finding) into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / REPORT_JSON, self.to_json() + "\n")
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        columns = ("kind", "path", "score", "label", "other", "suggested_label", "fix", "detail")
        writer.writerow(columns)
        for finding in self.findings:
            row = finding.to_dict()
            writer.writerow([row.get(column, "") for column in columns])
        atomic_write_text(out / FINDINGS_CSV, text.getvalue())
        return out


def diagnose(
    data_dir: Union[str, Path],
    against: Union[str, Path, None] = None,
    gate_threshold: Optional[float] = None,
    progress: Optional[DoctorProgress] = None,
    cache: bool = True,
    embedder=None,
) -> DoctorReport:
    """Examine the labelled dataset ``data_dir`` (folder-per-class or Kaggle); nothing is written but caches.

    ``against``: a folder of photos (labelled or not, any depth) that must not appear in ``data_dir``, e.g.
    the test set. ``gate_threshold``: the car gate's threshold (None = ``carclf.gate.DEFAULT_THRESHOLD``; a
    bundle's own via ``CarGate.from_meta``). ``cache=False`` keeps nothing on disk.
    """
    from carclf.embedding_cache import LazyEmbedder, default_cache_dir, embed_files
    from carclf.gate import CarGate

    started = time.perf_counter()
    embedder = embedder or LazyEmbedder()  # built once, and only if some photo is not cached
    gate = CarGate(gate_threshold) if gate_threshold is not None else CarGate()
    step = _stage(progress, "checking files")
    info = scan_dataset(data_dir, progress=step, min_classes=1)
    root = info.root
    rel = [item.path.relative_to(root).as_posix() for item in info.items]
    labels = np.array(info.labels, dtype=np.int64)
    report = DoctorReport(root=root, layout=info.layout, classes=info.classes, n_images=len(info.items),
                          findings=[], class_counts=info.counts, gate_threshold=gate.threshold,
                          excluded=len(info.excluded), relabelled=len(info.relabelled), paths=rel,
                          labels=labels.tolist())
    findings = []
    for path, reason in info.unreadable:
        label = _label_of(info, path)
        findings.append(Finding("unreadable", path.relative_to(root).as_posix(), 1.0,
                                info.classes[label] if label >= 0 else "", detail=reason))
    report.timings["scan_s"] = time.perf_counter() - started

    emb = embed_files(info.paths, default_cache_dir(root) if cache else None, _stage(progress, "embedding"),
                      embedder=embedder)
    report.features, report.computed = emb.features, emb.computed
    report.timings["embed_s"] = emb.seconds
    ok = emb.ok
    names = [info.classes[label] for label in labels]
    for i in np.flatnonzero(~ok):
        findings.append(Finding("unreadable", rel[i], 1.0, names[i], detail=emb.errors[i]))

    tick = time.perf_counter()
    _stage(progress, "comparing")(0, 1)
    known_matches = len(emb.cache.match_scores) if emb.cache is not None else 0
    findings += _duplicate_findings(emb, ok, rel, names)
    if against is not None:
        against_findings, report.n_against = _leak_findings(emb, ok, rel, names, against, cache, embedder)
        findings += against_findings
        report.against = Path(against).expanduser().resolve()
    _stage(progress, "comparing")(1, 1)
    if emb.cache is not None and len(emb.cache.match_scores) != known_matches:
        emb.cache.save(force=True)  # keep the template matches verified this run
    report.timings["compare_s"] = time.perf_counter() - tick

    not_car = ok & (emb.car_scores < gate.threshold)
    findings += [_not_a_car(i, rel, names, emb, gate.threshold) for i in np.flatnonzero(not_car)]
    findings += _size_findings(emb, ok, rel, names)

    tick = time.perf_counter()
    _stage(progress, "labels")(0, 1)
    label_findings, report.label_check = _label_findings(emb.features, labels, ok & ~not_car, rel, info.classes)
    findings += label_findings
    _stage(progress, "labels")(1, 1)
    report.timings["labels_s"] = time.perf_counter() - tick

    kept = {path for path, d in load_decisions(root, info.classes).items() if d.action == "keep"}
    report.reviewed = sum(1 for f in findings if f.path in kept)
    order = {kind: n for n, kind in enumerate(KINDS)}
    report.findings = sorted((f for f in findings if f.path not in kept),
                             key=lambda f: (order[f.kind], -f.score, f.path))
    report.timings["total_s"] = time.perf_counter() - started
    return report


def _label_of(info, path: Path) -> int:
    """The class index of an unreadable photo: the class folder it sits in (-1 when unknown)."""
    for part in path.relative_to(info.root).parts[:-1]:
        if part in info.classes:
            return info.classes.index(part)
    return -1


def _stage(progress: Optional[DoctorProgress], stage: str) -> Callable[[int, int], None]:
    return (lambda done, total: progress(stage, done, total)) if progress is not None else (lambda d, t: None)


def _duplicate_findings(emb, ok, rel, names) -> list[Finding]:
    """One finding per photo that repeats an earlier one (the earlier photo of each pair is kept)."""
    from carclf.doctor_dupes import find_pairs

    index = np.flatnonzero(ok)
    scores = emb.cache.match_scores if emb.cache is not None else None
    pairs = find_pairs(emb.features[index], emb.thumbs[index], [emb.pixel_hashes[i] for i in index],
                       scores=scores, keys_a=[emb.digests[i] for i in index])
    best: dict[int, Finding] = {}
    for pair in pairs:
        first, second = sorted((int(index[pair.i]), int(index[pair.j])))
        what = "the same pixels as" if pair.kind == "duplicate" else f"an edited copy of (match {pair.score:.2f})"
        filed = f"; filed as {names[second]}, the other as {names[first]}" if names[first] != names[second] else ""
        finding = Finding(pair.kind, rel[second], pair.score if pair.kind == "near_duplicate" else 1.0,
                          names[second], other=rel[first], detail=f"{what} {rel[first]}{filed}")
        if second not in best or _rank(finding) > _rank(best[second]):
            best[second] = finding
    return list(best.values())


def _rank(finding: Finding) -> tuple:
    return (finding.kind == "duplicate", finding.score)


def _leak_findings(emb, ok, rel, names, against, cache: bool, embedder) -> tuple[list[Finding], int]:
    """Photos of DIR found again in ``against``; the second count is how many photos ``against`` holds."""
    from carclf.doctor_dupes import find_pairs
    from carclf.embedding_cache import default_cache_dir, embed_files

    other_root = Path(against).expanduser().resolve()
    if not other_root.is_dir():
        raise DataError(f"{against}: no such folder to compare against.")
    other_paths = list_images(other_root, recursive=True)
    other = embed_files(other_paths, default_cache_dir(other_root) if cache else None, embedder=embedder)
    mine, theirs = np.flatnonzero(ok), np.flatnonzero(other.ok)
    scores = emb.cache.match_scores if emb.cache is not None else None
    pairs = find_pairs(emb.features[mine], emb.thumbs[mine], [emb.pixel_hashes[i] for i in mine],
                       other.features[theirs], other.thumbs[theirs], [other.pixel_hashes[j] for j in theirs],
                       scores=scores, keys_a=[emb.digests[i] for i in mine],
                       keys_b=[other.digests[j] for j in theirs])
    best: dict[int, Finding] = {}
    for pair in pairs:
        i, j = int(mine[pair.i]), int(theirs[pair.j])
        other_rel = other_paths[j].relative_to(other_root).as_posix()
        how = "the same pixels as" if pair.kind == "duplicate" else f"an edited copy of (match {pair.score:.2f})"
        finding = Finding("leak", rel[i], 1.0 if pair.kind == "duplicate" else pair.score, names[i],
                          other=other_rel, detail=f"{how} {other_rel} in {other_root.name}/")
        if i not in best or finding.score > best[i].score:
            best[i] = finding
    return list(best.values()), len(other_paths)


def _not_a_car(i: int, rel, names, emb, threshold: float) -> Finding:
    from carclf.imagenet import IMAGENET_CLASSES

    top = int(emb.imagenet_top[i])
    seen = f"; ImageNet sees {IMAGENET_CLASSES[top]!r} ({emb.imagenet_top_p[i]:.2f})" if top >= 0 else ""
    return Finding("not_a_car", rel[i], round(1.0 - float(emb.car_scores[i]), 4), names[i],
                   detail=f"car score {emb.car_scores[i]:.3f} < gate {threshold:.2f}{seen}")


def _size_findings(emb, ok, rel, names) -> list[Finding]:
    findings = []
    for i in np.flatnonzero(ok):
        width, height = (int(v) for v in emb.sizes[i])
        short, long = min(width, height), max(width, height)
        aspect = long / max(short, 1)
        if short < TINY_SIDE:
            findings.append(Finding("outlier_size", rel[i], round(1.0 - short / TINY_SIDE, 4), names[i],
                                    detail=f"{width}x{height}: shorter side below {TINY_SIDE} px"))
        elif aspect > MAX_ASPECT:
            findings.append(Finding("outlier_size", rel[i], round(min(1.0, aspect / (4 * MAX_ASPECT)), 4),
                                    names[i], detail=f"{width}x{height}: aspect ratio {aspect:.1f} > {MAX_ASPECT:g}"))
    return findings


def _label_findings(features, labels, usable, rel, classes) -> tuple[list[Finding], dict]:
    """The label suspects as findings, and the label check's summary (``LabelCheck.to_dict``)."""
    index = np.flatnonzero(usable)
    check = check_labels(features[index], labels[index], len(classes))
    return [Finding("suspected_label", rel[index[s.index]], s.score, classes[s.given],
                    suggested_label=classes[s.suggested],
                    detail=f"looks like {classes[s.suggested]} (p={s.margin + s.self_confidence:.2f}), "
                           f"{classes[s.given]} only p={s.self_confidence:.2f}")
            for s in check.suspects], check.to_dict()


def fixes(report: DoctorReport, kinds: Iterable[str] = DEFAULT_APPLY_KINDS, label_fix: str = "exclude",
          top_labels: Optional[int] = None,
          label_max_confidence: Optional[float] = AUTO_LABEL_MAX_CONFIDENCE) -> list[Decision]:
    """The decisions that would fix ``report``'s findings of ``kinds`` (one per photo, the first kind wins).

    For label suspects: ``label_fix`` "exclude" or "relabel" (to the suggested class); only those whose
    label got at most ``label_max_confidence`` out of fold (None = all), and at most ``top_labels`` of them.
    """
    kinds = set(kinds)
    unknown = kinds - set(KINDS)
    if unknown:
        raise DataError(f"unknown finding kind(s) {', '.join(sorted(unknown))}; kinds are {', '.join(KINDS)}.")
    if label_fix not in ("relabel", "exclude"):
        raise DataError(f"label_fix must be 'relabel' or 'exclude', got {label_fix!r}.")
    decisions: dict[str, Decision] = {}
    labels_taken = 0
    for finding in report.findings:
        if finding.kind not in kinds or finding.path in decisions:
            continue
        if finding.kind == "suspected_label":
            if top_labels is not None and labels_taken >= top_labels:
                continue
            if label_max_confidence is not None and 1.0 - finding.score > label_max_confidence + 1e-9:
                continue
            labels_taken += 1
            action = label_fix
        else:
            action = finding.fix
        reason = f"{finding.kind}: {finding.detail}" if finding.detail else finding.kind
        decisions[finding.path] = Decision(finding.path, action, finding.suggested_label if action == "relabel"
                                           else "", reason)
    return list(decisions.values())


def apply_fixes(report: DoctorReport, kinds: Iterable[str] = DEFAULT_APPLY_KINDS, label_fix: str = "exclude",
                top_labels: Optional[int] = None,
                label_max_confidence: Optional[float] = AUTO_LABEL_MAX_CONFIDENCE) -> int:
    """Write ``fixes(report, ...)`` to the dataset's decisions file, keeping decisions already there.

    Returns how many decisions were added. The photos themselves are never touched.
    """
    return set_decisions(report.root, fixes(report, kinds, label_fix, top_labels, label_max_confidence),
                         classes=report.classes)


__all__ = ["KINDS", "Finding", "DoctorReport", "diagnose", "fixes", "apply_fixes", "DEFAULT_APPLY_KINDS",
           "TINY_SIDE", "MAX_ASPECT", "IMBALANCE_RATIO"]
