"""One way to describe a run in words: its state line and its one headline score.

A run produces several accuracies: the best validation accuracy of any single epoch (``best_val_accuracy``
in status.json, measured during training on the augmented-training model of that epoch), and the exported
model's final validation score (``val_metrics`` in status.json and the bundle's meta.json; with
``val_accuracy_tta`` when the run used test-time augmentation; ``final_val_accuracy`` is the TTA one when
present). The headline everywhere (runs table, sidebar, CLI) is the exported model's score, because that is
the model people use; the others are explained where they are shown.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping, Optional

# Explains the per-epoch number shown next to the headline (runs table tooltip, CLI).
BEST_EPOCH_HELP = ("best val acc of an epoch: the highest validation accuracy of any single training epoch; "
                   "the exported model is the best epoch by validation loss, so its score can differ.")
# Explains the headline score.
HEADLINE_HELP = ("validation accuracy of the exported model (the bundle), measured once after training on the "
                 "held-out photos; 'TTA' = averaged over test-time-augmented views, as the run's config asked.")


def headline_score(metrics: Optional[Mapping]) -> tuple[Optional[float], bool]:
    """(accuracy, with_tta) of an exported model from its ``val_metrics``; (None, False) when unknown.

    The TTA score is the headline when the run measured it (the config's ``tta`` > 0), as in
    ``final_val_accuracy``.
    """
    metrics = metrics if isinstance(metrics, Mapping) else {}  # a damaged status.json may hold anything
    for key, tta in (("val_accuracy_tta", True), ("val_accuracy", False)):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), tta
    return None, False


def headline_text(metrics: Optional[Mapping]) -> str:
    """'val acc 91.2%' or 'val acc 91.2% (TTA)'; '' when the run has no final score yet."""
    value, tta = headline_score(metrics)
    if value is None:
        return ""
    return f"val acc {value:.1%}" + (" (TTA)" if tta else "")


def describe_state(status: Mapping) -> str:
    """A run's state in words: 'finished', 'finished (stopped early at epoch 44 of 50)', 'running: epoch 3 of 50'...

    The planned epoch count is ``epochs_planned`` (the config's total, written at start) or else
    ``epochs_total`` (which the trainer lowers as stages stop early).
    """
    state = str(status.get("state") or "unknown")
    epoch = positive_count(status.get("epoch"))
    planned = positive_count(status.get("epochs_planned")) or positive_count(status.get("epochs_total"))
    if state == "finished":
        if planned and 0 < epoch < planned:
            return f"finished (stopped early at epoch {epoch} of {planned})"
        return "finished"
    if state == "running":
        current = positive_count(status.get("epoch_in_progress")) or epoch
        return f"running: epoch {current} of {planned}" if planned and current else "running: starting"
    if state in ("stopped", "interrupted", "failed") and planned and epoch:
        return f"{state} after epoch {epoch} of {planned}"
    return state


def progress_fraction(status: Mapping) -> float:
    """Share of the run done, 0..1: 1.0 for a finished run (even one stopped early)."""
    if status.get("state") == "finished":
        return 1.0
    total = positive_count(status.get("epochs_total"))
    return min(1.0, positive_count(status.get("epoch")) / total) if total else 0.0


def positive_count(value) -> int:
    """A count from a JSON file (status.json, meta.json), 0 when missing or damaged (a string, a list, a
    negative number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def duration_text(status: Mapping) -> str:
    """Wall time of a run, '12m 05s': started (else created) -> finished (else its last heartbeat); '' when
    unknown. A status.json edited by hand or imported may hold anything: a time without its zone is UTC."""
    start = _moment(status.get("started_at") or status.get("created_at"))
    end = _moment(status.get("finished_at") or status.get("heartbeat_at"))
    if start is None or end is None or end < start:
        return ""
    seconds = (end - start).total_seconds()
    return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


def _moment(value) -> Optional[datetime]:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
