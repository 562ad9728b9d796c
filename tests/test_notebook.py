"""The Kaggle notebook: committed clean, and run end to end (nbclient) on real competition photos in the
competition's layout with a tiny configuration; plus the notebook helpers it calls (carclf.notebook, holdout)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from carclf import notebook as nb
from carclf.errors import CarclfError, DataError
from carclf.holdout import MANIFEST, make_holdout

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "kaggle_sf_car_classification.ipynb"
COMPETITION = "cars/sf_dl_car_classification_ostrebko"  # one genuine photo per class 0..9
PER_CLASS = 3  # train.csv rows (and photos) per class in the test copy
N_TEST = 5  # test_upload photos (real sample-submission ids)
# Longest the notebook may take on a shared 2-core machine (it trains 4 one-epoch stages, evaluates, submits).
NOTEBOOK_TIMEOUT_S = 900


def make_competition_folder(shared_data: Path, root: Path) -> tuple[Path, list[str]]:
    """The competition's layout from real photos: train.csv (real ids) + train/<Category>/<Id>,
    test_upload/<Id> and a sample-submission.csv of real ids; returns (root, the test ids in sample order)."""
    rows: dict[str, list[str]] = {}
    with open(shared_data / "sf_meta" / "train.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if len(rows.setdefault(row["Category"], [])) < PER_CLASS:
                rows[row["Category"]].append(row["Id"])
    photos = {c: next((shared_data / COMPETITION / c).glob("*.jpg")) for c in rows}
    root.mkdir(parents=True)
    with open(root / "train.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Id", "Category"])
        for category, ids in sorted(rows.items()):
            (root / "train" / category).mkdir(parents=True)
            for image_id in ids:
                writer.writerow([image_id, category])
                shutil.copy(photos[category], root / "train" / category / image_id)
    with open(shared_data / "sf_meta" / "sample-submission.csv", newline="") as handle:
        sample = list(csv.reader(handle))
    test_ids = [row[0] for row in sample[1:N_TEST + 1]]
    (root / "test_upload").mkdir()
    for image_id, category in zip(test_ids, sorted(photos)[::2]):
        shutil.copy(photos[category], root / "test_upload" / image_id)
    with open(root / "sample-submission.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([sample[0], *sample[1:N_TEST + 1]])
    return root, test_ids


def test_committed_notebook_is_clean() -> None:
    """No outputs, no execution counts, valid nbformat, and no machine paths in its code."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    source = re.sub(r"#.*", "", "\n".join(cell.source for cell in code))  # comments may name Kaggle's folders
    assert not re.search(r"(/home/|/work/|/tmp/|/root/|/kaggle/|[A-Z]:\\\\)", source), "hard-coded machine path"
    assert "parameters" in code[0].metadata.get("tags", [])


def test_find_data_dir_finds_the_competition_under_kaggle_input(shared_data: Path, tmp_path: Path) -> None:
    kaggle_input = tmp_path / "input"
    (kaggle_input / "other-dataset" / "photos").mkdir(parents=True)
    data, _ = make_competition_folder(shared_data, kaggle_input / "sf-dl-car-classification" / "data")
    assert nb.find_data_dir("", kaggle_input) == data
    assert nb.find_data_dir(str(kaggle_input / "other-dataset"), kaggle_input) == kaggle_input / "other-dataset"
    with pytest.raises(CarclfError, match="no competition data found under .*CARCLF_DATA_DIR"):
        nb.find_data_dir("", kaggle_input / "other-dataset")
    with pytest.raises(CarclfError, match="no such folder"):
        nb.find_data_dir(str(tmp_path / "missing"), kaggle_input)


def test_holdout_links_a_stratified_split_and_replaces_only_its_own(shared_data: Path, tmp_path: Path) -> None:
    data, _ = make_competition_folder(shared_data, tmp_path / "sf")
    split = make_holdout(data, tmp_path / "split", val_fraction=0.34, seed=1)
    assert split.n_train == 20 and split.n_val == 10
    assert all(c == {"train": 2, "val": 1} for c in split.counts.values())
    val_photos = sorted(split.val.rglob("*.jpg"))
    assert all(p.is_symlink() and p.resolve().parent == (data / "train" / p.parent.name).resolve() for p in val_photos)
    train_ids = {p.name for p in split.train.rglob("*.jpg")}
    assert not train_ids & {p.name for p in val_photos} and len(train_ids) == 20
    assert json.loads((split.train / "labels.json").read_text())["1"] == "Ford Focus"

    again = make_holdout(data, tmp_path / "split", val_fraction=0.34, seed=1, max_per_class=2)  # replaces the first
    assert again.n_train == 10 and again.n_val == 10
    assert json.loads((tmp_path / "split" / MANIFEST).read_text())["max_per_class"] == 2
    kept = {p.name for p in (tmp_path / "split").rglob("*.jpg")}
    assert len(kept) == 20 and kept <= train_ids | {p.name for p in val_photos}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a holdout split"):
        make_holdout(data, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_run_streams_output_and_names_the_failure(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    assert nb.run("runs", "list", "--runs-dir", tmp_path) == 0
    assert f"no runs in {tmp_path}" in capsys.readouterr().out
    with pytest.raises(nb.StepFailed, match=r"runs failed \(exit code 2\): error: .*nope"):
        nb.run("runs", "show", "nope", "--runs-dir", tmp_path)


def test_photo_grid_and_worst_photos_draw_real_photos(shared_data: Path, tmp_path: Path) -> None:
    from carclf.data import scan_dataset
    from carclf.evaluation import FileResult, build_report

    data, _ = make_competition_folder(shared_data, tmp_path / "sf")
    info = scan_dataset(data)
    chosen = nb.sample_paths(info, per_class=2, seed=0)
    assert [name for name, _ in chosen] == [str(i) for i in range(10)] and all(len(p) == 2 for _, p in chosen)
    fig = nb.plot_samples(info, per_class=2)
    assert sum(1 for ax in fig.axes if ax.images) == 20
    classes = tuple(str(i) for i in range(10))
    files = (FileResult(str(info.paths[0]), "0", "5", 0.9), FileResult(str(info.paths[3]), "1", "1", 0.8))
    report = build_report(files=files, model_classes=classes, unreadable=(), tta=2)
    fig = nb.plot_worst(report)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["0 -> 5 (0.90)"]
    named = nb.plot_worst(report, names=dict(zip(info.classes, info.display_names)))
    assert [ax.get_title() for ax in named.axes if ax.images] == ["Lada Priora -> Lada Niva (0.90)"]
    assert len(nb.plot_confusion(report).axes[0].texts) == 2  # one count per non-empty cell


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_competition_photos(shared_data: Path, tmp_path: Path, monkeypatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    from carclf.bundle_file import unpack_bundle

    data, test_ids = make_competition_folder(shared_data, tmp_path / "sf")
    out = tmp_path / "out"
    tiny = {"backbone": "efficientnet_lite0", "weights": "none", "img_size": 64, "batch_size": 8}
    settings = {
        "CARCLF_DATA_DIR": str(data), "CARCLF_NB_OUT": str(out), "CARCLF_NB_PRESET": "full",
        "CARCLF_NB_EPOCHS": "4",  # the full preset's four stages, one epoch each
        "CARCLF_NB_IMAGE_CAP": "3", "CARCLF_NB_VAL_FRACTION": "0.34", "CARCLF_NB_TTA": "2",
        "CARCLF_NB_CONFIG": json.dumps(tiny), "CARCLF_NB_PIP": "carclf-is-importable-so-never-installed",
        "PYTHONPATH": str(REPO_ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl"), "TMPDIR": str(tmp_path),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=NOTEBOOK_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "TensorFlow can use: no GPU" in text and "warning: no GPU for the full preset" in text
    assert "findings:" in text  # the doctor ran on the training split against the held-out photos
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 5  # counts, samples, curves, confusion matrix, worst photos: each drawn once
    with open(out / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["Id", "Category"] and [r[0] for r in rows[1:]] == test_ids
    assert all(r[1] in {str(i) for i in range(10)} for r in rows[1:])
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["n_images"] == 10 and report["tta"] == 2
    model_files = sorted(out.glob("sf-*.zip"))
    assert len(model_files) == 1
    assert unpack_bundle(model_files[0], tmp_path / "unpacked").is_dir()  # checked and loaded by Keras
    run_files = sorted(out.glob("run-*.zip"))
    assert len(run_files) == 1 and run_files[0].stat().st_size > 0
