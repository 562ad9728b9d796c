"""The data doctor on a real car set with injected problems: precision/recall per kind, speed, and what
cleaning buys a `quick` training run.

Clean set: the 5-brand car photos of ``../shared/data`` (the two brand sources merged, as in
bench_accuracy.py), minus one photo of each of the 3 near-duplicate pairs the two sources share (found by
the doctor, checked by eye: the same press photo in both sources). A stratified TEST_FRACTION is the clean
test folder; into the rest (train) are injected:
- FLIP_FRACTION of the train photos moved to another class (label flips);
- NEAR_DUP_FRACTION edited copies (cropped 2-6 % per side, resized to 50-90 %, brightness +-15 %,
  JPEG quality 60-85) of other train photos;
- NONCAR_FRACTION photos with no vehicle (``noncars/``), filed under random classes;
- LEAKS test photos copied into train (half as they are, half edited like the near-duplicates).
Then ``diagnose(train, against=test)`` at default thresholds; each kind is scored against what was injected.
Label flips also get a ceiling: how many a classifier fitted to the true labels would rank in the top k on
the same features (``label_ceiling``), to tell a weak ranking from classes the features do not separate.

Speed: ``python -m carclf doctor`` (the CLI, as a user runs it: TensorFlow start included) on SPEED_PHOTOS
photos (every photo of ../shared/data plus edited copies), once with an empty cache and once again.

Training: ``python -m carclf train --preset quick`` on the noisy train folder, and on the same folder with
the doctor's fixes applied (``--apply``: exclusions + relabels written to its decisions file); both bundles
evaluated on the clean test photos, and on those of them not leaked into the noisy train folder (only the
noisy model has seen the leaked ones, so the plain test accuracy flatters it).

    python bench/bench_doctor.py [--skip-train] [--skip-speed] [--seeds 0 1 2] [--train-seeds 0 1 2]

Prints one JSON object and writes bench/results/doctor.json. Slow (minutes, mostly the two trainings).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS = REPO_ROOT / "bench" / "results" / "doctor.json"

# The clean sets, each a tuple of folder-per-class sources merged by class name. "brands" (5 brands, ~155
# photos, the set bench_accuracy.py trains on) is the main case, with the training comparison; "models"
# (5 car models sold in Russia, 50 photos) is a second, smaller check of detection only.
CASES = {
    "brands": ("cars/vidhyagupta_car_brands_5", "cars/mfismail_car_brands_3"),
    "models": ("cars/manzhura_ru_5models",),
}
# Near-duplicate pairs already present across the two sources (same press photo): the second of each is
# left out of the clean set, so that every near-duplicate in the benchmark is a known, injected one.
KNOWN_NEAR_DUPLICATES = (
    ("vidhyagupta_car_brands_5/mercedes/train_35.jpg", "mfismail_car_brands_3/mercedes/train_49.jpg"),
    ("vidhyagupta_car_brands_5/lamborghini/train_37.jpg", "mfismail_car_brands_3/lamborghini/train_45.jpg"),
    ("vidhyagupta_car_brands_5/mercedes/train_1.jpg", "mfismail_car_brands_3/mercedes/test_1.jpeg"),
)
# Real non-car photos in the clean sources (brand logos, checked by eye): flagging them is right, so they
# count as correct not_a_car findings when they land in train (they are real dirt, not injected).
KNOWN_NON_CARS = ("mfismail_car_brands_3/mercedes/train_2.jpg", "mfismail_car_brands_3/mercedes/train_6.jpg")
TEST_FRACTION = 0.25
FLIP_FRACTION = 0.10
NEAR_DUP_FRACTION = 0.05
NONCAR_FRACTION = 0.05
LEAKS = 6
SPEED_PHOTOS = 1000
# Targets of issue 10.
TARGET_DUP_RECALL = TARGET_DUP_PRECISION = 0.95
TARGET_NONCAR_RECALL = 0.9
TARGET_FLIPS_IN_TOP_K = 0.7
TARGET_FIRST_RUN_S = 120
TARGET_SECOND_RUN_S = 10


def edited_copy(src: Path, dest: Path, rng: random.Random) -> Path:
    """A near-duplicate as users make them: cropped a little, resized, re-exposed, recompressed."""
    from PIL import Image, ImageEnhance

    from carclf.images import load_image

    image = load_image(src)
    width, height = image.size
    crops = [rng.uniform(0.02, 0.06) for _ in range(4)]
    image = image.crop((int(width * crops[0]), int(height * crops[1]), int(width * (1 - crops[2])),
                        int(height * (1 - crops[3]))))
    scale = rng.uniform(0.5, 0.9)
    image = image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))),
                         Image.Resampling.LANCZOS)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    image.save(dest, "JPEG", quality=rng.randint(60, 85))
    return dest


def clean_photos(sources: tuple[str, ...]) -> dict[str, list[Path]]:
    """Class -> real photos of the sources, known cross-source duplicates left out."""
    from carclf.data import list_images

    dropped = {SHARED_DATA / "cars" / second for _, second in KNOWN_NEAR_DUPLICATES}
    brands: dict[str, list[Path]] = {}
    for source in sources:
        for folder in sorted(p for p in (SHARED_DATA / source).iterdir() if p.is_dir()):
            brands.setdefault(folder.name, []).extend(p for p in list_images(folder) if p not in dropped)
    return brands


def build_case(work: Path, sources: tuple[str, ...], seed: int) -> dict:
    """Copy the clean set into train/ and test/, inject the problems into train/, return the truth."""
    rng = random.Random(seed)
    train, test = work / "train", work / "test"
    kept: list[tuple[str, Path]] = []  # (class, path in train)
    truth_known: list[Path] = []  # real logos among the train photos
    for brand, photos in clean_photos(sources).items():
        photos = sorted(photos)
        rng.shuffle(photos)
        n_test = max(1, round(len(photos) * TEST_FRACTION))
        for folder, chosen in ((test, photos[:n_test]), (train, photos[n_test:])):
            (folder / brand).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                target = folder / brand / f"{photo.parents[1].name[:8]}_{photo.name}"
                shutil.copy(photo, target)
                if folder is train:
                    kept.append((brand, target))
                    if photo.relative_to(SHARED_DATA / "cars").as_posix() in KNOWN_NON_CARS:
                        truth_known.append(target)
    classes = sorted({brand for brand, _ in kept})
    n_train = len(kept)
    order = [i for i in range(n_train) if kept[i][1] not in truth_known]  # logos are neither flipped nor copied
    rng.shuffle(order)
    n_flip, n_dup = round(n_train * FLIP_FRACTION), round(n_train * NEAR_DUP_FRACTION)
    flips, dup_sources = order[:n_flip], order[n_flip:n_flip + n_dup]
    truth: dict = {"classes": classes, "train_photos_clean": n_train, "flips": {}, "near_duplicates": [],
                   "not_a_car": [], "leaks": [], "known_not_a_car": []}
    truth["known_not_a_car"] = [rel(p, train) for p in truth_known]
    for index in dup_sources:
        brand, source = kept[index]
        copy = source.with_name(f"copy_{source.stem}.jpg")
        edited_copy(source, copy, rng)
        truth["near_duplicates"].append((rel(copy, train), rel(source, train)))
    for index in flips:
        brand, source = kept[index]
        wrong = rng.choice([c for c in classes if c != brand])
        moved = train / wrong / source.name
        shutil.move(source, moved)
        truth["flips"][rel(moved, train)] = brand
        # a near-duplicate pair whose original moved keeps pointing at it
        truth["near_duplicates"] = [(c, rel(moved, train) if o == rel(source, train) else o)
                                    for c, o in truth["near_duplicates"]]
    noncars = sorted((SHARED_DATA / "noncars").glob("*.*"))
    noncars = [p for p in noncars if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    for photo in rng.sample(noncars, round(n_train * NONCAR_FRACTION)):
        target = train / rng.choice(classes) / f"noncar_{photo.name}"
        shutil.copy(photo, target)
        truth["not_a_car"].append(rel(target, train))
    test_photos = sorted(test.rglob("*.*"))
    truth["test_photos"] = len(test_photos)
    for number, photo in enumerate(rng.sample(test_photos, min(LEAKS, len(test_photos) // 2))):
        target = train / photo.parent.name / f"leak_{photo.stem}.jpg"
        if number % 2:
            edited_copy(photo, target, rng)
        else:
            shutil.copy(photo, target.with_suffix(photo.suffix))
            target = target.with_suffix(photo.suffix)
        truth["leaks"].append((rel(target, train), rel(photo, test)))
    return truth


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def pair_scores(found: set, injected: set) -> dict:
    """Precision/recall of unordered pairs."""
    found_keys = {frozenset(p) for p in found}
    injected_keys = {frozenset(p) for p in injected}
    hits = len(found_keys & injected_keys)
    return {"injected": len(injected_keys), "found": len(found_keys), "correct": hits,
            "precision": round(hits / len(found_keys), 4) if found_keys else None,
            "recall": round(hits / len(injected_keys), 4) if injected_keys else None}


def score_report(report, truth: dict) -> dict:
    """Precision and recall per kind against the injected truth."""
    near = {(f.path, f.other) for f in report.findings if f.kind in ("near_duplicate", "duplicate")}
    leaks = {(f.path, f.other) for f in report.by_kind("leak")}
    noncar_found = {f.path for f in report.by_kind("not_a_car")}
    noncar_true = set(truth["not_a_car"])
    noncar_real = set(truth["known_not_a_car"])
    suspects = report.by_kind("suspected_label")
    k = len(truth["flips"])
    top = suspects[:k]
    hits = [f for f in top if f.path in truth["flips"]]
    flagged_hits = [f for f in suspects if f.path in truth["flips"]]
    return {
        "near_duplicate": pair_scores(near, {tuple(p) for p in truth["near_duplicates"]}),
        "leak": pair_scores(leaks, {tuple(p) for p in truth["leaks"]}),
        "not_a_car": {"injected": len(noncar_true), "found": len(noncar_found),
                      "correct": len(noncar_found & noncar_true),
                      "recall": round(len(noncar_found & noncar_true) / len(noncar_true), 4),
                      "precision": round(len(noncar_found & (noncar_true | noncar_real)) / max(len(noncar_found), 1), 4),
                      "real_logos_in_train": len(noncar_real), "real_logos_found": len(noncar_found & noncar_real),
                      "flagged_wrongly": sorted(noncar_found - noncar_true - noncar_real)},
        "suspected_label": {"injected_flips": k, "flagged": len(suspects),
                            "flips_in_top_k": len(hits), "top_k_hit_rate": round(len(hits) / k, 4) if k else None,
                            "flips_flagged_at_all": len(flagged_hits),
                            "suggested_label_right": sum(1 for f in flagged_hits
                                                         if f.suggested_label == truth["flips"][f.path])},
        "outlier_size": len(report.by_kind("outlier_size")),
        "unreadable": len(report.by_kind("unreadable")),
    }


def speed_folder(root: Path, seed: int) -> Path:
    """SPEED_PHOTOS photos in folder-per-class layout: every photo of ../shared/data plus edited copies."""
    from carclf.images import IMAGE_EXTENSIONS

    rng = random.Random(seed)
    photos = sorted(p for p in SHARED_DATA.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    made = 0
    for photo in photos:
        folder = root / photo.relative_to(SHARED_DATA).parts[0]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, folder / f"{made:04d}_{photo.name}")
        made += 1
    while made < SPEED_PHOTOS:
        photo = rng.choice(photos)
        folder = root / photo.relative_to(SHARED_DATA).parts[0]
        try:
            edited_copy(photo, folder / f"{made:04d}_edit.jpg", rng)
        except Exception:  # noqa: BLE001 - an odd-format photo (GIF, CMYK...) just is not copied
            continue
        made += 1
    return root


def cli(*args: str, timeout: int = 3600) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "carclf", *args], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=timeout)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise RuntimeError(f"carclf {' '.join(args)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return seconds, result


def measure_speed(work: Path, seed: int) -> dict:
    folder = speed_folder(work / "speed", seed)
    load_before = os.getloadavg()[0]  # other work on the machine slows the first run: say how much there was
    first_s, first = cli("doctor", str(folder), "--json", "--no-progress")
    second_s, second = cli("doctor", str(folder), "--json", "--no-progress")
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    return {"photos": sum(1 for p in folder.rglob("*") if p.is_file() and ".carclf-cache" not in p.parts),
            "n_images": one["n_images"], "cpu_count": os.cpu_count(),
            "first_run_s": round(first_s, 1), "first_run_timings": one["timings"], "first_embedded": one["computed"],
            "second_run_s": round(second_s, 1), "second_run_timings": two["timings"],
            "second_embedded": two["computed"], "same_findings": one["findings"] == two["findings"],
            "findings": one["summary"], "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "targets_met": first_s <= TARGET_FIRST_RUN_S and second_s <= TARGET_SECOND_RUN_S}


def train_and_score(data: Path, test: Path, work: Path, name: str, leaked: set) -> dict:
    """Train quick on ``data``; accuracy on every test photo, and on those NOT copied into the noisy train set
    (``leaked``: paths relative to ``test``), which only the noisy model has seen."""
    from carclf.evaluation import evaluate

    seconds, result = cli("train", "--preset", "quick", "--data", str(data), "--name", name,
                          "--runs-dir", str(work / "runs"), "--models-dir", str(work / "models"))
    bundles = sorted((work / "models").glob(f"{name}*"))
    if not bundles:
        raise RuntimeError(f"training {name} made no bundle: {result.stdout[-1500:]} {result.stderr[-1500:]}")
    report = evaluate(bundles[-1], test)
    unseen = [f for f in report.files if rel(Path(f.path).resolve(), test.resolve()) not in leaked]
    return {"test_accuracy": round(report.accuracy, 4), "test_photos": report.n_images,
            "unleaked_test_accuracy": round(sum(f.true == f.predicted for f in unseen) / len(unseen), 4),
            "unleaked_test_photos": len(unseen), "tta": report.tta, "train_seconds": round(seconds, 1)}


def compare_training(case: Path) -> dict:
    """quick on the noisy train folder and on a copy with the doctor's fixes applied (``doctor --apply``)."""
    from carclf.decisions import load_decisions

    truth = json.loads((case / "truth.json").read_text())
    leaked = {test_photo for _, test_photo in truth["leaks"]}
    cleaned = case / "cleaned"
    shutil.copytree(case / "train", cleaned, ignore=shutil.ignore_patterns(".carclf-cache"))
    noisy = train_and_score(case / "train", case / "test", case, "noisy", leaked)
    cli("doctor", str(cleaned), "--against", str(case / "test"), "--apply", "--no-progress")
    decisions = load_decisions(cleaned)
    actions = {a: sum(1 for d in decisions.values() if d.action == a) for a in ("exclude", "relabel")}
    clean = train_and_score(cleaned, case / "test", case, "cleaned", leaked)
    return {"noisy": noisy, "cleaned": {**clean, "decisions": actions}}


def mean_training(per_seed: list[dict]) -> dict:
    keys = ("test_accuracy", "unleaked_test_accuracy")
    return {f"{which}_{key}": round(sum(r[which][key] for r in per_seed) / len(per_seed), 4)
            for which in ("noisy", "cleaned") for key in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="one injected case per seed and clean set; scores are summed over them")
    parser.add_argument("--skip-train", action="store_true",
                        help="no training comparison (an earlier run's, in the results file, is kept and marked)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--train-seeds", type=int, nargs="+",
                        help="brand cases (of --seeds) the training comparison runs on (default: the first)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temp folder)")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-doctor-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"seeds": args.seeds, "cpu_count": os.cpu_count(), "cases": {}}
    try:
        for name, sources in CASES.items():
            runs = [detect(work / f"{name}-{seed}", sources, seed) for seed in args.seeds]
            result["cases"][name] = {"total": total_scores(runs), "per_seed": runs}
        if not args.skip_speed:
            result["speed"] = measure_speed(work, args.seeds[0])
        if not args.skip_train:
            train_seeds = args.train_seeds or args.seeds[:1]
            per_seed = [{"seed": seed, **compare_training(work / f"brands-{seed}")} for seed in train_seeds]
            result["training"] = {"case": "brands", "preset": "quick", "seeds": train_seeds,
                                  "mean": mean_training(per_seed), "per_seed": per_seed}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for key, skipped in (("speed", args.skip_speed), ("training", args.skip_train)):
        if skipped and RESULTS.is_file() and key not in result:
            earlier = json.loads(RESULTS.read_text()).get(key)
            if earlier:  # keep the (slow) part of an earlier full run, marked as such
                result[key] = {**earlier, "from_earlier_run": True}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def label_ceiling(report, truth: dict) -> int:
    """Flips a classifier trained on the TRUE labels would put in the top k: the ranking's bound on these features.

    The same out-of-fold ridge as the doctor's, on the same photos (not flagged unreadable or not a car), fitted
    to the labels before the flips; photos ranked by 1 - p[given label], as the doctor ranks them. It shows
    how much of a miss is the features' (the classes overlap in them) rather than the ranking's.
    """
    import numpy as np

    from carclf.doctor_labels import out_of_fold_probs

    skip = {f.path for f in report.findings if f.kind in ("unreadable", "not_a_car")}
    usable = [i for i, path in enumerate(report.paths) if path not in skip]
    paths = [report.paths[i] for i in usable]
    given = np.array([report.labels[i] for i in usable])
    true = np.array([report.classes.index(truth["flips"][p]) if p in truth["flips"] else g
                     for p, g in zip(paths, given)])
    probs = out_of_fold_probs(report.features[usable], true, len(report.classes))
    order = np.argsort(-(1.0 - probs[np.arange(len(given)), given]), kind="stable")
    return sum(1 for i in order[:len(truth["flips"])] if paths[i] in truth["flips"])


def detect(work: Path, sources: tuple[str, ...], seed: int) -> dict:
    """Build one injected case and score the doctor's findings on it at default thresholds."""
    from carclf.doctor import diagnose

    truth = build_case(work, sources, seed)
    (work / "truth.json").write_text(json.dumps(truth, indent=1))  # what was injected (kept with --keep)
    started = time.perf_counter()
    report = diagnose(work / "train", against=work / "test")
    scores = score_report(report, truth)
    scores["suspected_label"]["ceiling_flips_in_top_k"] = label_ceiling(report, truth)
    return {
        "sources": list(sources),
        "injected": {"train_photos_clean": truth["train_photos_clean"], "flips": len(truth["flips"]),
                     "near_duplicates": len(truth["near_duplicates"]), "not_a_car": len(truth["not_a_car"]),
                     "leaks": len(truth["leaks"]), "test_photos": truth["test_photos"]},
        "n_images": report.n_images,
        "doctor_seconds": round(time.perf_counter() - started, 1),
        "summary": report.summary,
        "label_check": report.label_check,
        "scores": scores,
        "targets": {
            "near_duplicate": _met(scores["near_duplicate"], TARGET_DUP_RECALL, TARGET_DUP_PRECISION),
            "leak": _met(scores["leak"], TARGET_DUP_RECALL, TARGET_DUP_PRECISION),
            "not_a_car": scores["not_a_car"]["recall"] >= TARGET_NONCAR_RECALL,
            "suspected_label": (scores["suspected_label"]["top_k_hit_rate"] or 0) >= TARGET_FLIPS_IN_TOP_K,
        },
    }


def total_scores(runs: list[dict]) -> dict:
    """Scores summed over seeds, with the targets judged on the sums."""
    total: dict = {}
    for kind in ("near_duplicate", "leak"):
        injected, found, correct = (sum(r["scores"][kind][key] for r in runs) for key in ("injected", "found", "correct"))
        total[kind] = {"injected": injected, "found": found, "correct": correct,
                       "precision": round(correct / found, 4) if found else None,
                       "recall": round(correct / injected, 4) if injected else None}
    noncar = [r["scores"]["not_a_car"] for r in runs]
    injected, correct = sum(n["injected"] for n in noncar), sum(n["correct"] for n in noncar)
    found, logos = sum(n["found"] for n in noncar), sum(n["real_logos_found"] for n in noncar)
    total["not_a_car"] = {"injected": injected, "found": found, "correct_injected": correct, "real_logos_found": logos,
                          "real_logos_in_train": sum(n["real_logos_in_train"] for n in noncar),
                          "recall": round(correct / injected, 4), "precision": round((correct + logos) / max(found, 1), 4)}
    labels = [r["scores"]["suspected_label"] for r in runs]
    flips, hits = sum(x["injected_flips"] for x in labels), sum(x["flips_in_top_k"] for x in labels)
    ceiling = sum(x["ceiling_flips_in_top_k"] for x in labels)
    total["suspected_label"] = {"injected_flips": flips, "flips_in_top_k": hits,
                                "top_k_hit_rate": round(hits / flips, 4) if flips else None,
                                "label_check_agreement": [r["label_check"]["agreement"] for r in runs],
                                "ceiling_flips_in_top_k": ceiling,
                                "ceiling_hit_rate": round(ceiling / flips, 4) if flips else None,
                                "flagged": sum(x["flagged"] for x in labels),
                                "flips_flagged_at_all": sum(x["flips_flagged_at_all"] for x in labels),
                                "suggested_label_right": sum(x["suggested_label_right"] for x in labels)}
    total["targets"] = {
        "near_duplicate": _met(total["near_duplicate"], TARGET_DUP_RECALL, TARGET_DUP_PRECISION),
        "leak": _met(total["leak"], TARGET_DUP_RECALL, TARGET_DUP_PRECISION),
        "not_a_car": total["not_a_car"]["recall"] >= TARGET_NONCAR_RECALL,
        "suspected_label": (total["suspected_label"]["top_k_hit_rate"] or 0) >= TARGET_FLIPS_IN_TOP_K,
    }
    return total


def _met(scores: dict, recall: float, precision: float) -> bool:
    return (scores["recall"] or 0) >= recall and (scores["precision"] or 0) >= precision


if __name__ == "__main__":
    sys.exit(main())
