"""Train: a form that launches a background training run, live curves of every run, and a comparison.

Runs are separate processes with their state on disk (carclf.runs), so they survive page reloads and the
page only polls them (an st.fragment that reruns every few seconds).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_args, get_type_hints

import pandas as pd
import streamlit as st

from carclf import machine, memory_fit, preset_guide, run_summary, runs
from carclf.data import dataset_name
from carclf.errors import CarclfError, ConfigError, RunError
from carclf.config import ACTIVATIONS, DEFAULT_PRESET, PRESETS, DenseBlock, HeadConfig, StageConfig, load_config
from carclf.ui.navigation import page_frame
from carclf.ui import (access, bundle_io, charts, dataset_picker, limits, loaders, run_io, settings, sidebar,
                       train_form, widgets)

# Seconds between refreshes of the runs table and the live curves.
RUN_POLL_S = 3
# Log lines shown under the curves.
LOG_TAIL_LINES = 30
# session_state key of the run whose curves are shown.
SELECTED_RUN_KEY = "train_run"
# session_state key of a stop/resume error, shown on the next rerun.
ACTION_ERROR_KEY = "train_action_error"
# session_state key of the runs launched in this session: when one finishes, its bundle becomes the sidebar's model.
LAUNCHED_KEY = "train_launched"
# session_state key of the message saying which finished run's model was selected (shown after the rerun).
ADOPTED_KEY = "train_adopted"
# Seconds the Stop button waits for the run to write its "stopped" state.
STOP_WAIT_S = 10


def data_ui():
    """The data folder, validated at once: its classes and counts are shown before anything is launched."""
    folder = dataset_picker.dataset_picker_ui(
        "train_data", folder_label="Training data folder",
        folder_help="One sub-folder per class, or the Kaggle layout (train.csv + train/).",
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
    """Every stage field (epochs, learning rate, unfreeze, patience, cached views, schedule, warm-up, size) as
    an editable table, one row per stage."""
    table = pd.DataFrame([dataclasses.asdict(stage) for stage in config.stages])
    edited = st.data_editor(
        table,
        num_rows="dynamic",
        key=key,
        column_config={
            "epochs": st.column_config.NumberColumn(min_value=1, step=1, format="%d", help="epochs in the stage"),
            "learning_rate": st.column_config.NumberColumn(min_value=1e-7, format="%.0e"),
            "unfreeze": st.column_config.TextColumn(
                help='How much of the backbone trains: "none" (head only), "all" (whole backbone, BatchNorm '
                     'stays frozen), a percentage like "30%" or the last N layers like "12 layers".'),
            "patience": st.column_config.NumberColumn(min_value=1, step=1, format="%d"),
            "cached_views": st.column_config.NumberColumn(
                min_value=0, step=1, format="%d",
                help="Head stages (unfreeze none) only: run the frozen backbone once over this many views of "
                     "each photo and train the head on the features in seconds (0 = every epoch through the backbone)."),
            "lr_schedule": st.column_config.SelectboxColumn(
                options=list(get_args(get_type_hints(StageConfig)["lr_schedule"])),
                help="plateau: constant rate, cut when val_loss stalls; cosine: warm-up, then decay to 0."),
            "warmup_epochs": st.column_config.NumberColumn(min_value=0.0, step=0.5, help="cosine only"),
            "img_size": st.column_config.NumberColumn(
                min_value=0, step=1, format="%d",
                help="0 = the run's image size; else this stage trains at this size (progressive resizing)."),
        },
        hide_index=True,
    )
    return train_form.stages_from_rows(edited.to_dict("records"))


def head_ui(config, key: str) -> dict:
    """The classifier head: pooling, BatchNorm after pooling, hidden blocks (every field), final dropout."""
    pooling_choices = list(get_args(get_type_hints(HeadConfig)["pooling"]))
    cols = st.columns(3)
    pooling = cols[0].selectbox("Pooling", pooling_choices, index=pooling_choices.index(config.head.pooling),
                                key=f"{key}_pooling")
    batchnorm = cols[1].checkbox("BatchNorm after pooling", value=config.head.batchnorm, key=f"{key}_batchnorm")
    dropout = cols[2].slider("Dropout before the output", 0.0, 0.8, float(config.head.dropout), 0.05,
                             key=f"{key}_dropout")
    st.caption("Hidden blocks (Dense -> BatchNorm -> activation -> Dropout); no rows = a linear head.")
    blocks = pd.DataFrame([dataclasses.asdict(block) for block in config.head.dense],
                          columns=[f.name for f in dataclasses.fields(DenseBlock)])
    edited = st.data_editor(
        blocks,
        num_rows="dynamic",
        key=f"{key}_dense",
        column_config={
            "units": st.column_config.NumberColumn(min_value=1, max_value=8192, step=1, format="%d", required=True),
            "activation": st.column_config.SelectboxColumn(options=list(ACTIVATIONS), default="relu"),
            "batchnorm": st.column_config.CheckboxColumn(default=False),
            "dropout": st.column_config.NumberColumn(min_value=0.0, max_value=0.95, step=0.05, default=0.0),
        },
        hide_index=True,
    )
    return {"pooling": pooling, "batchnorm": bool(batchnorm), "dense": train_form.dense_from_rows(edited.to_dict("records")),
            "dropout": float(dropout)}


def augmentation_choices() -> dict[str, str]:
    """Name -> TrainConfig.augmentation value: a preset's name, or the path of a config saved in the lab."""
    from carclf.augment import list_named, list_presets

    presets = list_presets()
    return {name: name if name in presets else str(path) for name, path in list_named(settings.augment_dir()).items()}


def form_ui(info) -> None:
    """The launch form; on submit builds a TrainConfig (validated by carclf.config) and starts a run."""
    from carclf.backbones import list_backbones

    presets = list(PRESETS)
    gpu = machine.has_gpu()
    suggested = preset_guide.suggest_preset(len(info.items), gpu) if info is not None else DEFAULT_PRESET
    if st.session_state.get("train_preset_suggested") != suggested:  # new data: start at its suggestion again
        st.session_state["train_preset_suggested"] = suggested
        st.session_state["train_preset"] = suggested
    preset = st.selectbox("Preset", presets, key="train_preset",
                          help="\n\n".join(filter(None, map(preset_guide.describe, presets))))
    if info is not None:
        st.caption(":material/lightbulb: " + preset_guide.why_suggested(len(info.items), gpu) + " "
                   + preset_guide.describe(preset))
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
        cols = st.columns(4)
        sizes = train_form.img_size_choices(base)
        img_size = cols[0].selectbox("Image size", sizes, index=sizes.index(base.img_size), key=f"{key}_img_size",
                                     format_func=lambda size: train_form.img_size_label(size, base.backbone),
                                     help="native = the backbone's own input size (what the preset's 0 means).")
        batch_size = cols[1].number_input("Batch size", 1, 512, base.batch_size, key=f"{key}_batch")
        micro_batch_size = cols[2].number_input(
            "Micro-batch (0 = whole batch)", 0, 512, base.micro_batch_size, key=f"{key}_micro_batch",
            help="Most photos computed at once: a larger batch runs in slices whose gradients are averaged "
                 "(less memory, not quite the same training).")
        aug_choices = augmentation_choices()
        if base.augmentation not in aug_choices.values():  # an inline dict or a file the lab does not list
            aug_choices = {"(the preset's own)": base.augmentation, **aug_choices}
        aug_names = list(aug_choices)
        augmentation = cols[3].selectbox(
            "Augmentation", aug_names,
            index=list(aug_choices.values()).index(base.augmentation),
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
    with widgets.user_errors(stop=False):
        st.caption(f":material/memory: The preset as loaded: {memory_fit.plan_for_dashboard(base).message}. "
                   "Launch re-checks your edits and lowers micro_batch_size if they would not fit.")
    if not submitted:
        return
    if info is None:
        st.error("Choose a valid training data folder first.")
        return
    with widgets.user_errors():
        values = dict(backbone=backbone, weights=weights, img_size=int(img_size), batch_size=int(batch_size),
                      micro_batch_size=int(micro_batch_size), augmentation=aug_choices[augmentation],
                      stages=stages, head=head)
        config = train_form.build_config(
            preset, values, data=str(info.root), name=name.strip() or dataset_name(info.root),
            models_dir=str(settings.models_dir()), total_epochs=int(total_epochs))
        limits.check_launch(settings.runs_dir())  # public mode: one run at a time, workspace not full
        plan = memory_fit.plan_for_dashboard(config)  # beside this server's own memory, with a margin
        if not plan.fits:
            raise ConfigError(f"this training does not fit in memory: {plan.message}")
        run_id = runs.start_run(plan.config, settings.runs_dir())
    st.session_state[SELECTED_RUN_KEY] = run_id
    st.session_state.setdefault(LAUNCHED_KEY, []).append(run_id)
    st.success(f"Started run `{run_id}`: it trains in the background; follow it in the Runs tab. {plan.message}.",
               icon=":material/check:")


def runs_table(all_runs: list[dict]) -> pd.DataFrame:
    """One row per run: its state in words, progress (100 % once finished) and the exported model's score."""
    scores = [run_summary.headline_score(r.get("val_metrics")) for r in all_runs]
    return pd.DataFrame(
        {
            "run": [r["run_id"] for r in all_runs],
            "state": [r.get("state") for r in all_runs],
            "status": [run_summary.describe_state(r) + (" · imported" if runs.is_imported(r) else "")
                       for r in all_runs],
            "stage": [r.get("stage") for r in all_runs],
            "progress": [run_summary.progress_fraction(r) for r in all_runs],
            "model val acc": [value for value, _ in scores],
            "TTA": [tta if value is not None else None for value, tta in scores],
            "best epoch val acc": [r.get("best_val_accuracy") for r in all_runs],
            "duration": [run_summary.duration_text(r) for r in all_runs],
        }
    )


def _run_action(action, run_id: str) -> None:
    """Button callback (runs before the rerun, so the table drawn next already shows the new state)."""
    try:
        if not access.can_manage():
            raise RunError(access.manage_blocked_reason())
        action(run_id, settings.runs_dir())
    except CarclfError as error:
        st.session_state[ACTION_ERROR_KEY] = str(error)


def _stop(run_id: str, runs_dir) -> None:
    runs.stop_run(run_id, runs_dir, timeout=STOP_WAIT_S)


def _resume(run_id: str, runs_dir) -> None:
    limits.check_launch(runs_dir)  # public mode: one run at a time
    runs.resume_run(run_id, runs_dir)


def run_files_ui(run_id: str, status: dict) -> None:
    """The finished run's bundle as one file, and (owner only) deleting the run, with a confirmation."""
    cols = st.columns([1, 1, 2])
    bundle = status.get("bundle")
    if bundle and Path(bundle).is_dir():
        bundle_io.download_bundle_button(bundle, key=f"train_download_{run_id}", container=cols[0])
    if access.can_manage() and not runs.is_active(status):
        with cols[1]:
            if widgets.confirm_ui("Delete run", key=f"train_delete_{run_id}",
                                  question=f"Delete run **{run_id}** (curves, log, checkpoints)? Its exported "
                                           "model stays in the models folder."):
                with widgets.user_errors(stop=False):
                    runs.delete_run(run_id, settings.runs_dir())
                    st.session_state.pop(SELECTED_RUN_KEY, None)
                    st.rerun()


def run_detail_ui(run_id: str, status: dict) -> None:
    """Curves, log tail and stop/resume buttons of one run."""
    runs_dir = settings.runs_dir()
    cols = st.columns([3, 1, 1])
    score = run_summary.headline_text(status.get("val_metrics"))
    cols[0].markdown(f"**{run_id}** · {run_summary.describe_state(status)}" + (f" · model {score}" if score else ""))
    manage = access.can_manage()  # visitors of a public app see the buttons greyed out
    cols[1].button("Stop", key="train_stop", disabled=not manage or not runs.is_active(status), icon=":material/stop:",
                   on_click=_run_action, args=(_stop, run_id), help=access.manage_blocked_reason() or None)
    resumable = runs.is_resumable(status)  # an imported run is read-only
    cols[2].button("Resume", key="train_resume", disabled=not manage or not resumable,
                   icon=":material/play_arrow:", on_click=_run_action, args=(_resume, run_id),
                   help=access.manage_blocked_reason() or None)
    if ACTION_ERROR_KEY in st.session_state:
        st.error(settings.hide_paths(st.session_state.pop(ACTION_ERROR_KEY)))
    if runs.is_imported(status):
        from carclf.run_archive import describe_origin

        st.info(describe_origin(status).capitalize() + ".", icon=":material/cloud_download:")
    if status.get("error"):
        st.error(settings.hide_paths(status["error"]))
    if status.get("bundle"):
        shown = Path(status["bundle"]).name if settings.is_public() else status["bundle"]
        st.success(f"Model bundle: `{shown}` (choose it in the sidebar).")
    run_files_ui(run_id, status)
    with widgets.user_errors(stop=False):  # a damaged history.csv costs the curves, not the log below
        history = runs.read_history(run_id, runs_dir)
        if history.empty:
            st.info("No finished epoch yet: the curves appear after the first epoch.")
        else:
            st.plotly_chart(charts.training_curves(history), key="train_curves")
    no_log = "(no log yet)" if status.get("state") in runs.ACTIVE_STATES else "(this run kept no log)"
    st.code(settings.hide_paths(runs.read_log_tail(run_id, runs_dir, lines=LOG_TAIL_LINES)) or no_log, language=None)


def adopt_finished_runs(all_runs: list[dict]) -> None:
    """When a run launched in this session has finished, select its bundle in the sidebar and say so.

    The sidebar is drawn outside this fragment, so the whole app reruns once to show the new choice.
    """
    launched = st.session_state.get(LAUNCHED_KEY) or []
    for status in all_runs:
        if status["run_id"] in launched and status.get("state") == runs.FINISHED and status.get("bundle"):
            launched.remove(status["run_id"])
            if sidebar.select_bundle(status["bundle"]):
                score = run_summary.headline_text(status.get("val_metrics"))
                st.session_state[ADOPTED_KEY] = (f"Run `{status['run_id']}` finished"
                                                 + (f" ({score})" if score else "")
                                                 + ": its model is now selected in the sidebar.")
                st.rerun()
    if ADOPTED_KEY in st.session_state:
        st.success(st.session_state.pop(ADOPTED_KEY), icon=":material/check:")


@st.fragment(run_every=RUN_POLL_S)
def runs_ui() -> None:
    """Every run in the runs folder, refreshed every RUN_POLL_S seconds."""
    all_runs = runs.list_runs(settings.runs_dir())
    adopt_finished_runs(all_runs)
    if not all_runs:
        st.info("No runs yet." if settings.is_public() else f"No runs yet in {settings.runs_dir()}.")
        return
    st.dataframe(
        runs_table(all_runs), hide_index=True,
        column_config={"progress": st.column_config.ProgressColumn(min_value=0, max_value=1, format="percent"),
                       "state": None,  # kept for code and tests; "status" says it in words
                       "model val acc": st.column_config.NumberColumn(format="%.3f", help=run_summary.HEADLINE_HELP),
                       "TTA": st.column_config.CheckboxColumn(help="the score averages test-time-augmented views"),
                       "best epoch val acc": st.column_config.NumberColumn(format="%.3f",
                                                                           help=run_summary.BEST_EPOCH_HELP)},
    )
    st.caption("**model val acc** is the exported model's validation score (the headline, also in the sidebar); "
               "**best epoch val acc** is the best single training epoch, for reference.")
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
        table = pd.DataFrame(configs).map(settings.hide_paths)
        differing = table[table.nunique(axis=1) > 1]
        st.markdown("**Config differences**")
        st.dataframe(differing, key="train_config_diff")


def train_page() -> None:
    st.title("Train")
    launch_tab, runs_tab, compare_tab = st.tabs(["Launch", "Runs", "Compare"])
    with launch_tab:
        info = data_ui()
        blocked = access.manage_blocked_reason() or limits.launch_blocked_reason()
        if blocked:  # a visitor of a public app, or another run is training there
            st.info(blocked, icon=":material/lock:")
        else:
            form_ui(info)
    with runs_tab:
        imported = run_io.import_run_ui()
        if imported:
            st.session_state[SELECTED_RUN_KEY] = imported
        runs_ui()
    with compare_tab:
        compare_ui()


page_frame()
train_page()
