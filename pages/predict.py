"""Predict: one photo in detail (verdict, top-k, TTA views, Grad-CAM) or many photos as a table + CSV, any
row of which opens that photo in detail.

The verdict is one of three: the car model; "Not sure" with the top alternatives when the calibrated top
probability is under the bundle's threshold; "Not a car" when the gate says so (it comes first)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from carclf.images import load_preview
from carclf.ui.navigation import page_frame
from carclf.ui import charts, loaders, photo_upload, sidebar, widgets, work_slot

# How many classes the bar chart shows.
DEFAULT_TOP_K = 5
# Photos per predict_batch call in the many-photos table: the progress bar moves after each chunk.
BATCH_CHUNK = 8
# Longer side of the photo as the page shows it and draws Grad-CAM over it, px (a phone photo is 4000).
PREVIEW_SIDE = 1280
# Size of the per-view thumbnails, px.
VIEW_THUMB_PX = 160
# Width of one view's tile in the TTA grid (up to six to a row on a laptop, two on a phone).
VIEW_TILE_PX = 140
# Alternatives named by a "Not sure" verdict.
NOT_SURE_ALTERNATIVES = 3


@dataclass(frozen=True)
class Options:
    """What the user asked for on this page."""

    tta: int  # number of TTA views averaged (1 = off: the photo alone)
    top_k: int
    explain: bool  # draw the Grad-CAM overlay


@dataclass(frozen=True)
class Photo:
    """One input: a display name and the raw file bytes (decoded later by carclf.images)."""

    name: str
    data: bytes

    def stream(self) -> io.BytesIO:
        """A named file object, so carclf's messages and results carry the file name."""
        stream = io.BytesIO(self.data)
        stream.name = self.name
        return stream


def options_ui(predictor) -> Options:
    cols = st.columns([2, 2, 1])
    model = str(predictor.path or predictor.name)
    tta = widgets.tta_ui("predict_tta", predictor.default_tta, model, container=cols[0])
    top_k = cols[1].slider("Top classes", 1, 10, DEFAULT_TOP_K, key="predict_top_k")
    explain = cols[2].toggle("Grad-CAM", value=True, key="predict_explain", help="Where the model looked.")
    return Options(tta=tta, top_k=top_k, explain=explain)


def photos_ui() -> list[Photo]:
    """Uploaded files first; else the camera shot; else the chosen sample."""
    upload_tab, camera_tab, sample_tab = st.tabs(["Upload", "Camera", "Samples"])
    with upload_tab:
        uploads = photo_upload.photo_uploader("Car photos (one for details, several for a table)",
                                              key="predict_upload", multiple=True)
    with camera_tab:
        shot = None
        if st.toggle("Use the camera", key="predict_camera_on"):
            shot = st.camera_input("Take a photo", key="predict_camera")
    with sample_tab:
        sample = widgets.sample_gallery_ui("predict_sample")
    if uploads:
        return [Photo(f.name, f.getvalue()) for f in uploads]
    if shot is not None:
        return [Photo("camera.jpg", shot.getvalue())]
    if sample is not None:
        return [Photo(sample.name, sample.read_bytes())]
    return []


def verdict_ui(result, predictor) -> None:
    """The answer in words: the car model, 'not sure' with the alternatives, or 'not a car' with the gate's
    score."""
    if result.is_car and result.uncertain:
        options = ", ".join(f"**{label}** {p:.0%}" for label, p in result.top_k[:NOT_SURE_ALTERNATIVES])
        st.warning(
            f"### Not sure\nNo answer reaches {predictor.uncertain_below:.0%}: it could be {options}.",
            icon=":material/help:",
        )
    elif result.is_car:
        st.success(f"### {result.label}\n{result.probability:.1%} confident", icon=":material/directions_car:")
    else:
        st.warning(
            f"### Not a car\nCar score {result.car_score:.2f} is below the gate's threshold "
            f"{predictor.gate_threshold:.2f}. Best guess if it is one: {result.label} ({result.probability:.0%}).",
            icon=":material/block:",
        )
    calibrated = "" if result.temperature is None else f" · calibrated (temperature {result.temperature:.2f})"
    st.caption(f"Car score {result.car_score:.2f} · model `{result.model_name}`{calibrated}")
    if result.tta_changed_answer:
        st.info(
            f"TTA changed the answer: the original view alone said **{result.views[0].label}**.",
            icon=":material/swap_horiz:",
        )


def views_ui(photo: Photo, result) -> None:
    """Each TTA view as the model saw it, with that view's top class."""
    from carclf.tta import tta_views

    batch, names = tta_views(photo.stream(), len(result.views), VIEW_THUMB_PX, [view.name for view in result.views])
    captions = [f"{name}: {view.label} ({view.probability:.0%})" for name, view in zip(names, result.views)]
    widgets.image_grid_ui(list(batch), captions, tile_px=VIEW_TILE_PX)


def single_ui(predictor, photo: Photo, options: Options) -> None:
    with widgets.user_errors():
        # the model reads the file as the CLI does; the page shows and explains a small copy
        result = predictor.predict(photo.stream(), tta=options.tta, top_k=options.top_k)
        with work_slot.work_slot():  # decoding a 50 MP upload costs memory like a model call: one at a time
            image = load_preview(photo.stream(), PREVIEW_SIDE)
    left, right = st.columns([1, 1])
    left.image(image, caption=photo.name, width="stretch")
    with right:
        verdict_ui(result, predictor)
        st.plotly_chart(charts.top_k_bar(result.top_k), key="predict_top_k_chart")
    if result.notice:
        st.info(result.notice, icon=":material/info:")
    if len(result.views) > 1:
        st.subheader(f"{len(result.views)} TTA views")
        with widgets.user_errors(stop=False), work_slot.work_slot():
            views_ui(photo, result)
    if options.explain:
        st.subheader("Grad-CAM: where the model looked")
        with widgets.user_errors(stop=False), st.spinner("Computing Grad-CAM…"):
            _, overlay = predictor.explain(image, class_index=int(np.argmax(result.probabilities)))
            cols = st.columns(2)
            cols[0].image(image, caption="photo", width="stretch")
            cols[1].image(overlay, caption=f"Grad-CAM for {result.label}", width="stretch")


def _verdict(result) -> str:
    """The table's answer: the label only for a car the model is sure of; a non-car is said to be one, never
    given a model; an uncertain answer says so with its best guess."""
    if not result.ok:
        return "unreadable"
    if not result.is_car:
        return "not a car"
    return f"not sure ({result.label}?)" if result.uncertain else result.label


def batch_ui(predictor, photos: list[Photo], options: Options) -> None:
    bar = st.progress(0.0, text=f"Predicting {len(photos)} photos…")
    results = []
    for start in range(0, len(photos), BATCH_CHUNK):
        chunk = photos[start : start + BATCH_CHUNK]
        with widgets.user_errors():
            results += predictor.predict_batch([p.stream() for p in chunk], tta=options.tta)
        done = min(start + BATCH_CHUNK, len(photos))
        bar.progress(done / len(photos), text=f"Predicted {done} / {len(photos)} photos")
    bar.empty()
    for photo, result in zip(photos, results):
        if not result.ok:
            st.error(result.error, icon=":material/broken_image:")
    table = pd.DataFrame(
        {
            "file": [p.name for p in photos],
            "prediction": [_verdict(r) for r in results],
            # a non-car's best guess is not an answer: its row shows the gate's car score instead
            "probability": [r.probability if r.ok and r.is_car else None for r in results],
            "is car": [r.is_car if r.ok else None for r in results],
            "car score": [r.car_score if r.ok else None for r in results],
        }
    )
    good = sum(r.ok for r in results)
    st.write(f"**{good}** of {len(photos)} photos predicted. Click a row to see that photo in detail.")
    event = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        column_config={
            "probability": st.column_config.ProgressColumn(
                format="percent", min_value=0, max_value=1,
                help="The model's (calibrated) probability of its answer; blank for photos that are not cars."),
            "car score": st.column_config.NumberColumn(format="%.2f"),
        },
        key="predict_table",
    )
    submission_ui(predictor, photos, results)
    chosen = detail_choice_ui(photos, event)
    if chosen is not None:
        st.divider()
        single_ui(predictor, photos[chosen], options)


def detail_choice_ui(photos: list[Photo], event) -> int | None:
    """The photo to show in detail: set by clicking a table row, or with the select box (phones, keyboards).
    Returns its index in ``photos``, or None for none."""
    rows = event.selection.rows if event and event.selection else []
    clicked = rows[0] if rows else None
    if clicked != st.session_state.get("predict_clicked"):  # a new click wins over the select box's value
        st.session_state["predict_clicked"] = clicked
        if clicked is not None:
            st.session_state["predict_detail"] = clicked
    choices = [None, *range(len(photos))]
    if st.session_state.get("predict_detail") not in choices:  # another upload: its rows are other photos
        st.session_state["predict_detail"] = None
    return st.selectbox("Photo in detail", choices, key="predict_detail",
                        format_func=lambda i: "none" if i is None else f"{i + 1}. {photos[i].name}")


def submission_ui(predictor, photos: list[Photo], results) -> None:
    """Download the readable photos' predictions as a Kaggle `Id,Category` CSV (Category = class folder)."""
    from carclf.submit import submission_rows, submission_text

    rows = submission_rows(predictor, [photo.name for photo in photos], results)
    st.download_button(
        f"Download Kaggle CSV ({len(rows)} rows)",
        data=submission_text(rows),
        file_name="submission.csv",
        mime="text/csv",
        key="predict_download",
        icon=":material/download:",
    )


def predict_page() -> None:
    st.title("Predict")
    with widgets.user_errors():
        # every model call waits its turn in the server-wide line (memory stays flat with many visitors)
        predictor = work_slot.queued(loaders.load_predictor(sidebar.selected_model()))
    options = options_ui(predictor)
    photos = photos_ui()
    if not photos:
        st.info("Upload car photos, take one with the camera, or pick a sample.", icon=":material/upload:")
        return
    if len(photos) == 1:
        single_ui(predictor, photos[0], options)
    else:
        batch_ui(predictor, photos, options)


page_frame()
predict_page()
