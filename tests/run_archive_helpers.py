"""A run archive as ``python -m carclf runs pack`` writes it, of a run folder "trained elsewhere" (a Kaggle
GPU run of the full preset, its history written here row by row): for the dashboard's import tests."""

from __future__ import annotations

import csv
from pathlib import Path

from carclf import runs
from carclf.config import load_config
from carclf.run_archive import pack_run

# Epochs of the pretend run: (stage, lr, loss, accuracy, val_loss, val_accuracy).
EPOCHS = [(1, 1e-3, 1.9, 0.35, 1.6, 0.45), (1, 1e-3, 1.4, 0.55, 1.3, 0.58), (2, 3e-4, 1.1, 0.66, 1.0, 0.69),
          (2, 3e-4, 0.9, 0.74, 0.85, 0.77), (3, 1e-4, 0.7, 0.82, 0.75, 0.81)]


def packed_run(folder: Path, name: str = "kaggle gpu") -> tuple[str, Path]:
    """(run id, archive path) of a finished 5-epoch run packed from ``folder``/runs into ``folder``/run.zip."""
    config = load_config(preset="full", overrides={"data": "/kaggle/input/sf-dl-car-classification", "name": name})
    paths = runs.create_run(config, folder / "runs")
    with open(paths.history, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(runs.HISTORY_COLUMNS)
        for epoch, (stage, lr, loss, accuracy, val_loss, val_accuracy) in enumerate(EPOCHS, start=1):
            writer.writerow([epoch, stage, lr, loss, accuracy, val_loss, val_accuracy, 812.5])
    paths.log.write_text("devices: GPU, 1 replica(s), mixed precision on, XLA on\n", encoding="utf-8")
    runs.update_status(paths, state=runs.FINISHED, epoch=len(EPOCHS), epochs_total=len(EPOCHS), stage=3,
                       stages_total=4, started_at="2026-11-30T10:00:00+00:00",
                       finished_at="2026-11-30T11:08:00+00:00", best_val_accuracy=0.81,
                       bundle=f"/kaggle/working/models/{paths.run_id}",
                       val_metrics={"val_loss": 0.75, "val_accuracy": 0.81, "val_accuracy_tta": 0.83, "tta": 8})
    return paths.run_id, pack_run(paths, folder / "run.zip")
