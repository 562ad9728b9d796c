"""Evaluate: score a model on a labelled folder; accuracy, per-class table, confusion matrix beside a
reliability diagram (are its probabilities honest?), and the photos behind any confusion cell with their
top-k and Grad-CAM."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from carclf.predict import model_tta
from carclf.ui.navigation import page_frame
from carclf.ui import charts, dataset_picker, loaders, sidebar, widgets, work_slot

# Photos shown for one confusion cell (each may get a Grad-CAM overlay, ~1 s each on CPU).
MAX_CELL_PHOTOS = 10
# session_state key of the last report (kept so clicking a cell does not re-run the evaluation).
REPORT_KEY = "eval_report"


def model_ui() -> str | None:
    """Which model to evaluate; starts at the sidebar's choice."""
    choices = sidebar.model_choices()
    current = st.session_state.get(sidebar.MODEL_KEY, sidebar.DEFAULT_CHOICE)
    options = list(choices)
    choice = st.selectbox("Model", options, index=options.index(current) if current in options else 0,
                          format_func=choices.get, key="eval_model")
    return None if choice == sidebar.DEFAULT_CHOICE else choice


def run_ui(model_path: str | None, folder, tta: int) -> None:
    """Run carclf.evaluate with a progress bar and keep the report in the session."""
    from carclf.evaluation import evaluate

    with widgets.user_errors():
        predictor = work_slot.queued(loaders.load_predictor(model_path))  # waits its turn, chunk by chunk
        bar = st.progress(0.0, text="Evaluating…")
        report = evaluate(predictor, folder, tta=tta,
                          progress=lambda done, total: bar.progress(done / max(total, 1),
                                                                    text=f"Evaluated {done} / {total} photos"))
        bar.empty()
    st.session_state[REPORT_KEY] = {"report": report, "model": model_path}


def scores_ui(report) -> None:
    row = widgets.metric_row()
    row.metric("Accuracy", f"{report.accuracy:.1%}")
    row.metric("Macro F1", f"{report.macro_f1:.3f}")
    row.metric("Photos", report.n_images)
    row.metric("Unreadable", len(report.unreadable))
    st.caption("Accuracy on the folder chosen here. The *val acc* in the model list is the bundle's own score on "
               "the photos held out when it was trained (marked TTA when averaged over augmented views); the two "
               "differ unless this folder is exactly that validation split.")
    table = pd.DataFrame([vars(m) for m in report.per_class]).rename(columns={"name": "class"})
    st.dataframe(table, hide_index=True, key="eval_per_class",
                 column_config={c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")})
    if report.unreadable:
        st.warning("Unreadable: " + "; ".join(f"{dataset_picker.display_path(p, report.data_dir)}: {why}"
                                              for p, why in report.unreadable))


def cell_choice_ui(report, chart_area) -> tuple[str, str]:
    """The confusion cell to open: set by clicking the heatmap (drawn in ``chart_area``), or with the two
    select boxes."""
    labels = list(report.labels)
    event = chart_area.plotly_chart(charts.confusion_heatmap(report.confusion, labels), key="eval_confusion",
                                    on_select="rerun", selection_mode="points")
    points = event.selection.points if event and event.selection else []
    if points:
        clicked = (str(points[0]["y"]), str(points[0]["x"]))
        if clicked != st.session_state.get("eval_clicked"):
            st.session_state["eval_clicked"] = clicked
            st.session_state["eval_true"], st.session_state["eval_pred"] = clicked
    if st.session_state.get("eval_true") not in labels:
        wrong = report.misclassified
        first = (wrong[0].true, wrong[0].predicted) if wrong else (labels[0], labels[0])
        st.session_state["eval_true"], st.session_state["eval_pred"] = first
    cols = st.columns(2)
    true = cols[0].selectbox("True class", labels, key="eval_true")
    pred = cols[1].selectbox("Predicted class", labels, key="eval_pred")
    return true, pred


def calibration_ui(report, area) -> None:
    """The reliability diagram and ECE / NLL / Brier before and after the bundle's temperature."""
    from carclf.calibration import summary_line

    if not report.calibration:
        area.caption("This report has no calibration scores: run the evaluation again.")
        return
    area.plotly_chart(charts.reliability_diagram(report.calibration), key="eval_reliability")
    area.caption(summary_line(report.calibration) + ". A calibrated model is right about as often as it says: "
                 "bars on the diagonal.")


def cell_ui(report, model_path: str | None, true: str, pred: str) -> None:
    """The photos of one confusion cell: file, predicted class and probability, top-k, Grad-CAM."""
    paths = report.cell(true, pred)
    st.subheader(f"True {true} → predicted {pred}: {len(paths)} photo{'' if len(paths) == 1 else 's'}")
    if not paths:
        return
    by_path = {f.path: f for f in report.files}
    show_cam = st.toggle("Grad-CAM overlays", value=False, key="eval_cam")
    predictor = work_slot.queued(loaders.load_predictor(model_path)) if show_cam else None
    for path in paths[:MAX_CELL_PHOTOS]:
        result = by_path[path]
        cols = st.columns([1, 1, 2])
        with widgets.user_errors(stop=False):
            cols[0].image(loaders.thumbnail_of(path, widgets.THUMBNAIL_PX), width="stretch")
            if predictor is not None:
                _, overlay = predictor.explain(path)
                overlay.thumbnail((widgets.THUMBNAIL_PX, widgets.THUMBNAIL_PX))
                cols[1].image(overlay, caption="Grad-CAM", width="stretch")
        top = " · ".join(f"{name} {p:.0%}" for name, p in result.top_k)
        shown = dataset_picker.display_path(path, report.data_dir)  # relative to the dataset in public mode
        cols[2].markdown(f"`{shown}`\n\ntrue **{result.true}**, predicted **{result.predicted}** "
                         f"({result.probability:.1%})\n\ntop-k: {top}")
    if len(paths) > MAX_CELL_PHOTOS:
        st.caption(f"…and {len(paths) - MAX_CELL_PHOTOS} more.")


def evaluate_page() -> None:
    st.title("Evaluate")
    model_path = model_ui()
    folder = dataset_picker.dataset_picker_ui("eval_data", folder_label="Labelled folder (one sub-folder per class)")
    with widgets.user_errors():
        own = model_tta(model_path or "default")  # read from the bundle's meta.json; the model loads on "Run"
    tta = widgets.tta_ui("eval_tta", own, str(model_path))
    if st.button("Run evaluation", type="primary", disabled=folder is None, key="eval_run",
                 icon=":material/play_arrow:"):
        run_ui(model_path, folder, tta)
    state = st.session_state.get(REPORT_KEY)
    if not state:
        return
    report = state["report"]
    views = f"TTA over {report.tta} views" if report.tta > 1 else "no TTA"
    st.caption(f"Model `{report.model_name}` on {dataset_picker.display_root(report.data_dir)} ({views}).")
    scores_ui(report)
    confusion_area, reliability_area = st.columns([3, 2])
    true, pred = cell_choice_ui(report, confusion_area)
    calibration_ui(report, reliability_area)
    cell_ui(report, state["model"], true, pred)


page_frame()
evaluate_page()
