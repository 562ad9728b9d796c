"""The Health view of the Data page: run the data doctor, show what it found, and record fixes.

"Check health" runs ``carclf.doctor.diagnose`` (a progress bar over its stages) and keeps the report in the
session, per dataset: a click on a fix button never re-runs it. Below come the findings per kind and the
class imbalance; a map of the dataset (``carclf.doctor_map``) whose points open their photo; and the
flagged photos in a paged grid, worst first (``carclf.doctor_review``), each with keep / exclude / relabel.
A click writes one row of the dataset's decisions file (``carclf.decisions``): nothing is moved or
deleted, and every page's scan honours the file. In public mode only the owner records decisions, and the
``against`` folder is a workspace dataset, never a server path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from carclf.decisions import DECISIONS_FILE, clear_decision, clear_decisions, load_decisions, set_decision
from carclf.doctor import KINDS
from carclf.errors import CarclfError, DataError, ImageError
from carclf.doctor_review import (ReviewItem, describe_decision, n_pages, page_bounds, pair_path, relabel_choices,
                                  review_items)
from carclf.ui import access, dataset_picker, loaders, settings, widgets, work_slot

# session_state: dataset root -> {"report": DoctorReport, "against": shown name or "", "points": its map}.
REPORTS_KEY = "health_reports"
# Reports kept per session: each holds the photos' features (about 5 MB per 1,000 photos).
MAX_REPORTS = 3
OPEN_KEY = "health_open"  # session_state: the photo opened from the map (path relative to the dataset)
CLICKED_KEY = "health_clicked"  # session_state: the last map click handled (a selection persists across reruns)
PAGE_KEY = "health_page"
ERROR_KEY = "health_error"  # session_state: why the last fix button could not write (shown on the next run)
# Flagged photos per page of the review grid, and per row: a page stays quick however large the dataset.
PER_PAGE = 12
PER_ROW = 3
# The doctor's stages and the share of the progress bar each gets (embedding is most of a first run).
STAGES = {"checking files": (0.0, 0.1), "embedding": (0.1, 0.85), "comparing": (0.85, 0.95), "labels": (0.95, 1.0)}
KIND_TITLES = {"unreadable": "Unreadable", "leak": "Leaks", "duplicate": "Duplicates",
               "near_duplicate": "Near-duplicates", "not_a_car": "Not a car", "suspected_label": "Suspect labels",
               "outlier_size": "Odd sizes"}
ALL_KINDS = "all"
# Map markers, px: plain photos, and flagged ones (drawn as outlined diamonds).
DOT_PX = 8
FLAGGED_PX = 13
MAP_HEIGHT_PX = 520


def progress_fraction(stage: str, done: int, total: int) -> float:
    """Where the whole check stands (0..1) when ``stage`` has done ``done`` of ``total``."""
    start, stop = STAGES.get(stage, (0.0, 1.0))
    share = 1.0 if total <= 0 else min(1.0, done / total)
    return start + (stop - start) * share


@st.cache_resource(show_spinner=False)
def _embedder():
    """One feature model per server process, built on the first photo that is not in a dataset's cache."""
    from carclf.embedding_cache import LazyEmbedder

    return LazyEmbedder()


def _key(folder) -> str:
    return str(Path(folder).expanduser().resolve())


def stored_report(folder):
    """This session's last report on ``folder`` as {"report", "against"}, or None."""
    return st.session_state.get(REPORTS_KEY, {}).get(_key(folder))


def against_ui(folder: Path) -> Path | None:
    """The optional test/validation photos to look for leaks in: a workspace dataset, or (local mode) a folder."""
    if not settings.is_public():
        return widgets.folder_input_ui(
            "Compare against: a test or validation folder (optional)", key="health_against",
            help="Photos of this dataset found again in that folder (the same picture, or an edited copy) are "
                 "reported as leaks: they make validation scores lie.")
    from carclf.datasets import list_datasets

    with widgets.user_errors(stop=False):
        entries = {e.name: Path(e.path) for e in list_datasets(settings.datasets_dir())
                   if _key(e.path) != _key(folder)}
        name = st.selectbox("Compare against (optional)", list(entries), index=None, key="health_against_dataset",
                            placeholder="Another dataset of the workspace, e.g. the test photos",
                            help="Photos of this dataset found again in that one are reported as leaks.")
        return entries[name] if name else None
    return None


def check_ui(folder: Path, against: Path | None) -> None:
    """Run the doctor with a progress bar (its model calls waiting their turn) and keep the report."""
    from carclf.doctor import diagnose
    from carclf.doctor_map import map_points
    from carclf.work_queue import QueuedEmbedder

    bar = st.progress(0.0, text="Checking the dataset…")
    shown = {"percent": -1, "stage": ""}

    def progress(stage: str, done: int, total: int) -> None:
        percent = int(100 * progress_fraction(stage, done, total))
        if (percent, stage) != (shown["percent"], shown["stage"]):  # one message per percent, not per photo
            shown.update(percent=percent, stage=stage)
            counted = f": {done} / {total}" if total > 1 else ""
            bar.progress(percent / 100, text=f"Health check, {stage}{counted}")

    waiting = st.empty()
    # the feature model waits its turn batch by batch: a long first check does not hold up other visitors
    embedder = QueuedEmbedder(_embedder(), heavy_slot=lambda: work_slot.slot_in(waiting))
    try:
        with widgets.user_errors(stop=False):
            report = diagnose(folder, against=against, progress=progress, embedder=embedder)
            bar.progress(1.0, text="Drawing the map…")
            points = map_points(report)  # a PCA: seconds for 1,000 photos on 2 cores, so once per check
            reports = st.session_state.setdefault(REPORTS_KEY, {})
            reports.pop(_key(folder), None)
            reports[_key(folder)] = {"report": report, "points": points,
                                     "against": dataset_picker.display_root(against) if against else ""}
            while len(reports) > MAX_REPORTS:
                reports.pop(next(iter(reports)))
            st.session_state.pop(OPEN_KEY, None)
    finally:
        bar.empty()


def summary_ui(report, against: str) -> None:
    """Findings per kind, the class imbalance, and what the check cost."""
    counts = report.summary
    rows = [widgets.metric_row(), widgets.metric_row()]
    for index, kind in enumerate(KINDS):
        rows[index // 4].metric(KIND_TITLES[kind], counts[kind])
    imbalance = report.imbalance
    rows[1].metric("Class imbalance", f"{imbalance['ratio']:.1f}×",
                   help=f"Largest class {imbalance['largest']} / smallest {imbalance['smallest']}.")
    if imbalance["flagged"]:
        st.warning(f"Class imbalance: **{imbalance['largest']}** has {imbalance['ratio']:.1f}× the photos of "
                   f"**{imbalance['smallest']}**; a model will lean towards the large classes. Add photos to the "
                   "small ones, or expect lower recall there.", icon=":material/balance:")
    if report.label_warning:
        st.info(report.label_warning, icon=":material/help:")
    seconds = report.timings.get("total_s", 0.0)
    leaks = f", compared against {against} ({report.n_against} photos)" if against else ""
    st.caption(f"{report.n_images} photos checked in {seconds:.1f} s ({report.computed} read now, the others from "
               f"the cache){leaks}. Photos already excluded are not checked; photos marked *keep* are not flagged "
               f"again ({report.reviewed} finding(s) hidden).")


def map_figure(points: list[dict], classes) -> go.Figure:
    """The photos placed by their features, one colour per class; flagged photos are outlined diamonds.

    Each point carries its path as ``customdata``, so a click names the photo to open.
    """
    palette = qualitative.Plotly if len(classes) <= len(qualitative.Plotly) else qualitative.Dark24
    fig = go.Figure()
    for index, name in enumerate(classes):
        # Unflagged points first: the flagged diamonds draw on top, and the legend (which shows a trace's
        # first marker) shows the class as a dot, not as a finding.
        rows = sorted((p for p in points if p["label"] == name), key=lambda p: bool(p["kinds"]))
        if not rows:
            continue
        flagged = [bool(p["kinds"]) for p in rows]
        hover = [f"{p['path']}<br>{', '.join(KIND_TITLES[k] for k in dict.fromkeys(p['kinds'])) or 'no finding'}"
                 for p in rows]
        fig.add_trace(go.Scatter(
            x=[p["x"] for p in rows], y=[p["y"] for p in rows], mode="markers", name=str(name),
            customdata=[[p["path"]] for p in rows], hovertext=hover, hoverinfo="text",
            marker=dict(color=palette[index % len(palette)], size=[FLAGGED_PX if f else DOT_PX for f in flagged],
                        symbol=["diamond" if f else "circle" for f in flagged],
                        line=dict(width=[2 if f else 0 for f in flagged], color="black"))))
    # The class legend goes below the map: beside it, it left a phone half the width for the points.
    fig.update_layout(height=MAP_HEIGHT_PX, margin=dict(l=10, r=10, t=10, b=10), legend_title_text="class",
                      legend=dict(orientation="h", y=-0.15),
                      xaxis=dict(title="component 1", zeroline=False), yaxis=dict(title="component 2",
                                                                                   zeroline=False))
    return fig


def clicked_path(points) -> str | None:
    """The photo a map selection names (its ``customdata``), or None."""
    for point in points or []:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        if isinstance(data, str) and data:
            return data
    return None


def open_photo(path: str | None) -> None:
    """Open ``path`` under the map, unless it is the click already handled (selections persist)."""
    if path and path != st.session_state.get(CLICKED_KEY):
        st.session_state[CLICKED_KEY] = path
        st.session_state[OPEN_KEY] = path


def map_ui(report, points: list[dict], decisions, can_fix: bool) -> None:
    """The scatter map (``map_points`` of the report); the clicked photo opens below it with the fix buttons."""
    if len(points) < 2:
        return
    st.subheader("Map of the dataset")
    st.caption("Click a photo to open it; outlined diamonds have findings.")
    event = st.plotly_chart(map_figure(points, report.classes), key="health_map", on_select="rerun",
                            selection_mode="points")
    open_photo(clicked_path(event.selection.points if event and event.selection else []))
    st.caption("Photos that look alike sit together (the first two principal components of their features). "
               "A photo far from its class, or inside another class's cloud, deserves a look.")
    opened = st.session_state.get(OPEN_KEY)
    if opened not in report.paths:
        return
    findings = tuple(f for f in report.findings if f.path == opened)
    label = report.classes[report.labels[report.paths.index(opened)]]
    item = ReviewItem(opened, label, findings, decisions.get(opened))
    with st.container(border=True):
        cols = st.columns([1, 2])
        with cols[0]:
            photo_ui(report, item, can_fix, key="health_m")


def _thumb(container, path: Path, caption: str) -> None:
    """A thumbnail; an unreadable or vanished file (an expected finding here) is one grey line, not an error."""
    try:
        container.image(loaders.thumbnail_of(path, widgets.THUMBNAIL_PX), caption=caption, width="stretch")
    except FileNotFoundError:
        container.caption(f":material/broken_image: {caption}: the file is gone.")
    except ImageError as error:
        container.caption(f":material/broken_image: {settings.hide_paths(str(error))}")


def photo_ui(report, item: ReviewItem, can_fix: bool, key: str) -> None:
    """One photo: the picture (and its pair), why it is flagged, its decision or the fix buttons."""
    pair = item.pair
    other = pair_path(report, pair) if pair else None
    if other is not None:
        cols = st.columns(2)
        _thumb(cols[0], report.root / item.path, "this photo")
        _thumb(cols[1], other, "in the test folder" if pair.kind == "leak" else "its pair (kept)")
    else:
        _thumb(st, report.root / item.path, item.path.rsplit("/", 1)[-1])
    st.markdown(f"`{item.path}` · class **{item.label}**")
    for finding in item.findings:
        st.caption(f"**{KIND_TITLES[finding.kind]}** ({finding.score:.2f}): {settings.hide_paths(finding.detail)}")
    if not item.findings:
        st.caption("No finding about this photo.")
    if item.suggested_label:
        st.caption(f"Suggested class: **{item.suggested_label}**")
    if item.decision is not None:
        st.info(f"Decided: {describe_decision(item.decision)}", icon=":material/task_alt:")
        if can_fix:
            st.button("Undo", key=f"{key}_{item.path}_undo", icon=":material/undo:", on_click=_undo,
                      args=(report.root, item.path), help="Forget this decision: the photo counts as on disk again.")
        return
    if can_fix:
        decide_ui(report, item, key=f"{key}_{item.path}")


def decide_ui(report, item: ReviewItem, key: str) -> None:
    """Keep / Exclude / Relabel to <class>: each click writes one row of the decisions file.

    The writes are button callbacks: they run before the page's next run, so a click costs one run, and the
    counts at the top of the page already include it.
    """
    reason = item.reason or "chosen on the map"
    where = (report.root, item.path)
    row = st.container(horizontal=True)  # side by side on a phone too, where columns would stack
    row.button("Keep", key=f"{key}_keep", icon=":material/check:", width="stretch", on_click=_decide,
               args=(*where, "keep", f"reviewed ({reason})", report.classes),
               help="The photo is fine: record it as reviewed, so it is not flagged again.")
    row.button("Exclude", key=f"{key}_exclude", icon=":material/block:", width="stretch", on_click=_decide,
               args=(*where, "exclude", reason, report.classes),
               help="Leave the photo out of training and evaluation (the file stays where it is).")
    choices = relabel_choices(report.classes, item)
    if not choices:
        return
    cols = st.columns([3, 2], vertical_alignment="bottom")
    cols[0].selectbox("Relabel to", choices, key=f"{key}_to")
    cols[1].button("Relabel", key=f"{key}_relabel", icon=":material/label:", width="stretch", on_click=_decide,
                   args=(*where, "relabel", reason, report.classes, f"{key}_to"),
                   help="Count the photo under the chosen class (the file is not moved).")


def _decide(root: Path, path: str, action: str, reason: str, classes, label_key: str = "") -> None:
    """Button callback: record one decision (a relabel's class is read from its select box)."""
    label = str(st.session_state.get(label_key) or "") if label_key else ""
    _safely(lambda: set_decision(root, path, action, label=label, reason=reason, classes=classes))


def _undo(root: Path, path: str) -> None:
    _safely(lambda: clear_decision(root, path))


def _safely(write: Callable[[], object]) -> None:
    """Run a write in a callback; a carclf error (e.g. a read-only folder) is kept for the page to show."""
    if not access.can_manage():  # the buttons are not drawn for visitors; refuse a forged click all the same
        st.session_state[ERROR_KEY] = access.manage_blocked_reason()
        return
    try:
        write()
    except CarclfError as error:
        st.session_state[ERROR_KEY] = str(error)


def review_ui(report, decisions, can_fix: bool) -> None:
    """The flagged photos, worst first, a page of ``PER_PAGE`` at a time."""
    st.subheader("Review and fix")
    summary = report.summary
    options = [ALL_KINDS] + [kind for kind in KINDS if summary[kind]]
    if st.session_state.get("health_kind") not in options:  # a new check found none of that kind
        st.session_state.pop("health_kind", None)
    cols = st.columns([2, 1], vertical_alignment="bottom")
    kind = cols[0].selectbox(
        "Show", options, key="health_kind",
        format_func=lambda k: (f"every kind ({len(report.findings)} findings)" if k == ALL_KINDS
                               else f"{KIND_TITLES[k]} ({summary[k]})"))
    hide = cols[1].toggle("Hide decided photos", key="health_hide_decided")
    items = review_items(report, decisions, None if kind == ALL_KINDS else kind, undecided_only=hide)
    if not items:
        st.success("Nothing left to review here.", icon=":material/task_alt:")
        return
    pages = n_pages(len(items), PER_PAGE)
    if st.session_state.get(PAGE_KEY, 1) > pages:
        st.session_state[PAGE_KEY] = pages
    page = st.number_input("Page", 1, pages, step=1, key=PAGE_KEY) if pages > 1 else 1
    page, start, stop = page_bounds(len(items), page, PER_PAGE)
    decided = sum(item.decision is not None for item in items)
    st.caption(f"Photos {start + 1}–{stop} of {len(items)}, worst first; {decided} decided. Each button writes one "
               f"line of `{DECISIONS_FILE}` next to the photos; no photo is moved or deleted.")
    for row in range(start, stop, PER_ROW):
        cols = st.columns(PER_ROW)
        for col, item in zip(cols, items[row: min(row + PER_ROW, stop)]):
            with col, st.container(border=True):
                photo_ui(report, item, can_fix, key="health_g")


def health_ui(folder: Path) -> None:
    """The Health section: check button, summary, map and review grid of the dataset at ``folder``."""
    st.header("Health")
    error = st.session_state.pop(ERROR_KEY, None)
    if error:
        st.error(settings.hide_paths(error), icon=":material/error:")
    st.write("Find duplicates, leaks into a test set, photos that are not cars, suspect labels and odd sizes; "
             "then keep, exclude or relabel each photo. Decisions go into a small file next to the data.")
    against = against_ui(folder)
    if st.button("Check health", key="health_check", type="primary", icon=":material/health_and_safety:"):
        check_ui(folder, against)
    state = stored_report(folder)
    if state is None:
        return
    report = state["report"]
    can_fix = access.can_manage()
    with widgets.user_errors(stop=False):
        decisions = load_decisions(report.root, report.classes)
        summary_ui(report, state["against"])
        if not can_fix:
            st.caption(":material/lock: " + access.manage_blocked_reason())
        map_ui(report, state["points"], decisions, can_fix)
        review_ui(report, decisions, can_fix)


def decisions_ui(info) -> None:
    """Photos on disk and used, excluded and relabelled by the decisions file; its rows; clear them all."""
    with widgets.user_errors(stop=False):
        decisions = load_decisions(info.root, info.classes)
        if not decisions:
            return
        row = widgets.metric_row()
        row.metric("On disk", len(info.items) + len(info.excluded),
                   help="Readable photos in the folder, including the ones the decisions file excludes.")
        row.metric("Used", len(info.items), help="What training, evaluation and the pages see.")
        row.metric("Excluded", len(info.excluded))
        row.metric("Relabelled", len(info.relabelled))
        kept = sum(d.action == "keep" for d in decisions.values())
        st.caption(f"`{DECISIONS_FILE}` holds {len(decisions)} decision(s) ({kept} kept as reviewed). The photos "
                   "themselves are never moved or deleted; clearing the file restores the dataset as it is on disk.")
        with st.expander(f"Recorded decisions ({len(decisions)})", icon=":material/list_alt:"):
            st.dataframe(pd.DataFrame([{"photo": d.path, "decision": describe_decision(d), "reason": d.reason,
                                        "when": d.decided_at} for d in decisions.values()]),
                         hide_index=True, key="health_decisions_table")
    clear_ui(info.root)


def clear_ui(root: Path) -> None:
    """Owner-only "Clear all decisions", with a confirmation."""
    from carclf.decisions import decisions_path

    if not access.can_manage() or not decisions_path(root).is_file():
        return
    if widgets.confirm_ui("Clear all decisions", key="health_clear", icon=":material/delete_sweep:",
                          question=f"Remove `{DECISIONS_FILE}`? Every photo counts again as it is on disk.",
                          confirm="Yes, clear them"):
        with widgets.user_errors(stop=False):
            try:
                clear_decisions(root)
            except DataError:  # a hand-edited row it cannot read (the scan said which): remove the file anyway
                decisions_path(root).unlink(missing_ok=True)
            st.rerun()
