"""Which training preset to suggest for a dataset on this machine, and what each one costs and buys.

The figures are measured, not promised: ``bench/bench_time_to_accuracy.py`` (fast, quick and the keras.io
recipe on the same splits of 159 real photos of 5 car brands: 89 train, 23 validation, 47 test; 2 CPU
cores shared with other jobs; means of splits 0-4, 2026-12-03). The Train page shows them next to the preset box so a newcomer can choose
between a first model in a minute and a better one in a few.
"""

from __future__ import annotations

from dataclasses import dataclass

# On a machine without a GPU, datasets up to this many photos get ``fast`` as the suggestion: its head-only
# training takes about 30 s for 200 photos and adds well under 0.1 s per photo; beyond it, quick's fine-tuning pays.
FAST_MAX_PHOTOS = 1000
# With a GPU, datasets from this many photos get ``full`` (the Kaggle-sized recipe); smaller ones ``quick``.
FULL_MIN_PHOTOS = 5000


@dataclass(frozen=True)
class PresetNote:
    """What a preset does, and what it cost and bought on the benchmark."""

    does: str
    measured: str


NOTES = {
    "fast": PresetNote(
        does="a head on frozen ImageNet features (3 cached views per photo), no fine-tuning, no TTA",
        measured="18 s for 112 photos, 17 s for 224, 29 s for 448 (train from scratch in a new process); test error 40 % (the keras.io recipe: 43 %)",
    ),
    "quick": PresetNote(
        does="272 px: a head on 10 cached views, then the whole backbone fine-tuned for 12 epochs, 4-view TTA",
        measured="about 2.2 min for 112 photos, 3.1 min for 224 (2 cores); test error 34 % (the old quick: 32 % in twice the time), where fast erred 40 %",
    ),
    "full": PresetNote(
        does="Lite2 at 260 px, four progressive stages, strong augmentation, mixed precision on a GPU",
        measured="made for the 15k-photo Kaggle set on a GPU; not measured on a CPU",
    ),
}


def suggest_preset(n_photos: int, gpu: bool) -> str:
    """The preset the Train page starts at: fast on a CPU with a small dataset, else quick, full for big GPU runs."""
    if gpu:
        return "full" if n_photos >= FULL_MIN_PHOTOS else "quick"
    return "fast" if n_photos <= FAST_MAX_PHOTOS else "quick"


def why_suggested(n_photos: int, gpu: bool) -> str:
    """One line saying why ``suggest_preset`` chose what it chose."""
    machine = "a GPU" if gpu else "no GPU"
    return f"Suggested for {n_photos} photos on this machine ({machine}): {suggest_preset(n_photos, gpu)}."


def describe(name: str) -> str:
    """'fast: what it does; measured: ...' for the page ('' for a preset without a note)."""
    note = NOTES.get(name)
    return f"**{name}**: {note.does}. Measured: {note.measured}." if note else ""
