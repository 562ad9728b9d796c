"""Train: a form that launches a background training run, live curves of every run, and a comparison.

Runs are separate processes with their state on disk (carclf.runs), so they survive page reloads and the
page only polls them (an st.fragment that reruns every few seconds).
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args, get_type_hints

import pandas as pd
import streamlit as st

from carclf import runs
from carclf.errors import CarclfError
from carclf.config import DEFAULT_PRESET, PRESETS, HeadConfig, StageConfig, load_config, with_total_epochs
from carclf.ui.navigation import page_frame
from carclf.ui import charts, loaders, settings, widgets

# Seconds between refreshes of the runs table and the live curves.
RUN_POLL_S = 3
# Log lines shown under the curves.
LOG_TAIL_LINES = 30
# Choices offered for the image size (the backbone's native size is added to them).
IMG_SIZES = (64, 96, 128, 160, 192, 224, 240, 260, 299, 320, 384)
# session_state key of the run whose curves are shown.
SELECTED_RUN_KEY = "train_run"
# session_state key of a stop/resume error, shown on the next rerun.
ACTION_ERROR_KEY = "train_action_error"
# Seconds the Stop button waits for the run to write its "stopped" state.
STOP_WAIT_S = 10


def data_ui():
    """The data folder, validated at once: its classes and counts are shown before anything is launched."""
    folder = widgets.folder_input_ui(
        "Training data folder", key="train_data", default=settings.default_data_dir(),
        help="One sub-folder per class, or the Kaggle layout (train.csv + train/).",
    )
    if folder is None:
        return None
    with widgets.user_errors(stop=False):
        info = loaders.scan_dataset(str(folder))
        counts = ", ".join(f"{name}: {n}" for name, n in info.counts.items())
        st.success(f"{info.num_classes} classes, {len(info.items)} photos ({counts}).", icon=":material/check:")
        if info.unreadable:
            st.warning(f"{len(info.unreadable)} unreadable files will be skipped (see the Data page).")
        return info
    return None


def stages_ui(config, key: str) -> list[dict]:
    """Epochs / learning rate / unfreeze / patience per stage, as an editable table (one row per stage)."""
    fields = list(StageConfig.__dataclass_fields__)
    table = pd.DataFrame([{f: float(getattr(stage, f)) for f in fields} for stage in config.stages])
    edited = st.data_editor(
        table,
        num_rows="dynamic",
        key=key,
        column_config={
            "epochs": st.column_config.NumberColumn(min_value=1, step=1, format="%d", help="epochs in the stage"),
            "learning_rate": st.column_config.NumberColumn(min_value=1e-7, format="%.0e"),
            "unfreeze": st.column_config.NumberColumn(
                min_value=0, help="0 = head only; a whole number N = last N backbone layers; 0-1 = that fraction"),
            "patience": st.column_config.NumberColumn(min_value=1, step=1, format="%d"),
        },
        hide_index=True,
    )
    return [
        {
            "epochs": int(row.epochs),
            "learning_rate": float(row.learning_rate),
            "unfreeze": float(row.unfreeze) if 0 < row.unfreeze < 1 else int(row.unfreeze),
            "patience": int(row.patience),
        }
        for row in edited.dropna().itertuples()
    ]


def head_ui(config, key: str) -> dict:
    """The classifier head: pooling, an optional hidden layer, dropout."""
    pooling_choices = list(get_args(get_type_hints(HeadConfig)["pooling"]))
    cols = st.columns(3)
    pooling = cols[0].selectbox("Pooling", pooling_choices, index=pooling_choices.index(config.head.pooling),
                                key=f"{key}_pooling")
    hidden_default = config.head.dense[0].units if config.head.dense else 0
    hidden = cols[1].number_input("Hidden units (0 = linear head)", 0, 4096, hidden_default, step=64,
                                  key=f"{key}_hidden")
    dropout = cols[2].slider("Dropout", 0.0, 0.8, float(config.head.dropout), 0.05, key=f"{key}_dropout")
    dense = [{"units": int(hidden)}] if hidden else []  # other DenseBlock fields keep their defaults
    return {"pooling": pooling, "batchnorm": config.head.batchnorm, "dense": dense, "dropout": dropout}


def augmentation_choices() -> dict[str, str]:
    """Name -> TrainConfig.augmentation value: a preset's name, or the path of a config saved in the lab."""
    from carclf.augment import list_named, list_presets

    presets = list_presets()
    return {name: name if name in presets else str(path) for name, path in list_named(settings.augment_dir()).items()}


def form_ui(info) -> None:
    """The launch form; on submit builds a TrainConfig (validated by carclf.config) and starts a run."""
    from carclf.backbones import list_backbones

    presets = list(PRESETS)
    preset = st.selectbox("Preset", presets, index=presets.index(DEFAULT_PRESET), key="train_preset",
                          help="quick: CPU, small data, minutes. full: GPU, the 15k-photo Kaggle set.")
    with widgets.user_errors():
        base = load_config(preset=preset)
    key = f"train_{preset}"
    with st.form("train_form"):
        cols = st.columns(3)
        name = cols[0].text_input("Run name", key=f"{key}_name", placeholder="the data folder's name",
                                  help="Part of the run id and of the model bundle's name.")
        backbones = list(list_backbones())
        backbone = cols[1].selectbox("Backbone", backbones, index=backbones.index(base.backbone),
                                     key=f"{key}_backbone")
        weights = cols[2].selectbox("Weights", ["imagenet", "none"], index=["imagenet", "none"].index(base.weights),
                                    key=f"{key}_weights")
        cols = st.columns(3)
        sizes = sorted(set(IMG_SIZES) | {base.img_size} - {0})
        img_size = cols[0].selectbox("Image size (px)", sizes, index=sizes.index(base.img_size) if base.img_size
                                     else sizes.index(224), key=f"{key}_img_size")
        batch_size = cols[1].number_input("Batch size", 1, 512, base.batch_size, key=f"{key}_batch")
        aug_choices = augmentation_choices()
        aug_names = list(aug_choices)
        augmentation = cols[2].selectbox(
            "Augmentation", aug_names,
            index=aug_names.index(base.augmentation) if base.augmentation in aug_names else 0,
            key=f"{key}_aug", help="Built-in presets and the configs saved in the Augmentation lab.",
        )
        st.markdown("**Stages** (stage 1 trains the head on a frozen backbone; later stages fine-tune)")
        stages = stages_ui(base, f"{key}_stages")
        total_epochs = st.number_input(
            "Total epochs (0 = as in the table)", 0, 1000, 0, key=f"{key}_total_epochs",
            help="Spreads this many epochs over the stages in the table's proportions (at least 1 each).",
        )
        st.markdown("**Head**")
        head = head_ui(base, f"{key}_head")
        submitted = st.form_submit_button("Launch training", type="primary", icon=":material/rocket_launch:")
    if not submitted:
        return
    if info is None:
        st.error("Choose a valid training data folder first.")
        return
    with widgets.user_errors():
        config = load_config(preset=preset, overrides=dict(
            data=str(info.root), name=name.strip() or info.root.name, backbone=backbone, weights=weights, img_size=int(img_size),
            batch_size=int(batch_size), augmentation=aug_choices[augmentation], stages=stages, head=head,
            models_dir=str(settings.models_dir()),
        ))
        if total_epochs:
            config = with_total_epochs(config, int(total_epochs))
        run_id = runs.start_run(config, settings.runs_dir())
    st.session_state[SELECTED_RUN_KEY] = run_id
    st.success(f"Started run `{run_id}`: it trains in the background; follow it in the Runs tab.", icon=":material/check:")


def _duration(status: dict) -> str:
    """Wall time of a run: started -> finished (or -> last heartbeat while it runs)."""
    start = status.get("started_at") or status.get("created_at")
    end = status.get("finished_at") or status.get("heartbeat_at")
    if not start or not end:
        return ""
    seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


def runs_table(all_runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r["run_id"] for r in all_runs],
            "state": [r.get("state") for r in all_runs],
            "stage": [r.get("stage") for r in all_runs],
            "progress": [(r.get("epoch") or 0) / r["epochs_total"] if r.get("epochs_total") else 0.0
                         for r in all_runs],
            "best val acc": [r.get("best_val_accuracy") for r in all_runs],
            "duration": [_duration(r) for r in all_runs],
        }
    )


def _run_action(action, run_id: str) -> None:
    """Button callback (runs before the rerun, so the table drawn next already shows the new state)."""
    try:
        action(run_id, settings.runs_dir())
    except CarclfError as error:
        st.session_state[ACTION_ERROR_KEY] = str(error)


def _stop(run_id: str, runs_dir) -> None:
    runs.stop_run(run_id, runs_dir, timeout=STOP_WAIT_S)


def run_detail_ui(run_id: str, status: dict) -> None:
    """Curves, log tail and stop/resume buttons of one run."""
    runs_dir = settings.runs_dir()
    cols = st.columns([3, 1, 1])
    cols[0].markdown(f"**{run_id}** · {status.get('state')}"
                     + (f" · epoch {status.get('epoch')}/{status.get('epochs_total')}" if status.get("epoch") else ""))
    cols[1].button("Stop", key="train_stop", disabled=not runs.is_active(status), icon=":material/stop:",
                   on_click=_run_action, args=(_stop, run_id))
    cols[2].button("Resume", key="train_resume", disabled=status.get("state") not in runs.RESUMABLE_STATES,
                   icon=":material/play_arrow:", on_click=_run_action, args=(runs.resume_run, run_id))
    if ACTION_ERROR_KEY in st.session_state:
        st.error(st.session_state.pop(ACTION_ERROR_KEY))
    if status.get("error"):
        st.error(status["error"])
    if status.get("bundle"):
        st.success(f"Model bundle: `{status['bundle']}` (choose it in the sidebar).")
    history = runs.read_history(run_id, runs_dir)
    if history.empty:
        st.info("No finished epoch yet: the curves appear after the first epoch.")
    else:
        st.plotly_chart(charts.training_curves(history), key="train_curves")
    st.code(runs.read_log_tail(run_id, runs_dir, lines=LOG_TAIL_LINES) or "(no log yet)", language=None)


@st.fragment(run_every=RUN_POLL_S)
def runs_ui() -> None:
    """Every run in the runs folder, refreshed every RUN_POLL_S seconds."""
    all_runs = runs.list_runs(settings.runs_dir())
    if not all_runs:
        st.info(f"No runs yet in {settings.runs_dir()}.")
        return
    st.dataframe(
        runs_table(all_runs), hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn(min_value=0, max_value=1, format="percent"),
                       "best val acc": st.column_config.NumberColumn(format="%.3f")},
    )
    by_id = {r["run_id"]: r for r in all_runs}
    if st.session_state.get(SELECTED_RUN_KEY) not in by_id:
        st.session_state[SELECTED_RUN_KEY] = all_runs[0]["run_id"]
    run_id = st.selectbox("Run", list(by_id), key=SELECTED_RUN_KEY)
    run_detail_ui(run_id, by_id[run_id])


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def compare_ui() -> None:
    """Validation curves of several runs on one chart, and the config values that differ between them."""
    runs_dir = settings.runs_dir()
    run_ids = [r["run_id"] for r in runs.list_runs(runs_dir)]
    chosen = st.multiselect("Runs to compare", run_ids, default=run_ids[:2], key="train_compare")
    if len(chosen) < 2:
        st.caption("Choose at least two runs.")
        return
    with widgets.user_errors(stop=False):
        histories = {run_id: runs.read_history(run_id, runs_dir) for run_id in chosen}
        st.plotly_chart(charts.compare_curves(histories, "val_accuracy"), key="train_compare_chart")
        configs = {run_id: _flatten(load_config(runs.run_paths(run_id, runs_dir).config).to_dict())
                   for run_id in chosen}
        table = pd.DataFrame(configs)
        differing = table[table.nunique(axis=1) > 1]
        st.markdown("**Config differences**")
        st.dataframe(differing, key="train_config_diff")


def train_page() -> None:
    st.title("Train")
    launch_tab, runs_tab, compare_tab = st.tabs(["Launch", "Runs", "Compare"])
    with launch_tab:
        info = data_ui()
        form_ui(info)
    with runs_tab:
        runs_ui()
    with compare_tab:
        compare_ui()


page_frame()
train_page()
