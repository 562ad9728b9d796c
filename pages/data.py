"""Data: what is in a dataset folder before training on it (classes, counts, samples, unreadable files), and its
health: the data doctor's findings, reviewed and fixed photo by photo (carclf.ui.health)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from carclf.ui.navigation import page_frame
from carclf.ui import access, charts, dataset_picker, health, loaders, widgets

# Photos shown per class in the sample grid.
SAMPLES_PER_CLASS = 5


def summary_ui(info) -> None:
    row = widgets.metric_row()
    row.metric("Classes", info.num_classes)
    row.metric("Photos", len(info.items))
    row.metric("Unreadable", len(info.unreadable))
    counts = list(info.counts.values())
    row.metric("Smallest / largest class", f"{min(counts)} / {max(counts)}")
    st.caption(f"Layout: `{info.layout}` · {dataset_picker.display_root(info.root)}")
    labels = {name: f"{name} · {display}" if display != name else name
              for name, display in zip(info.classes, info.display_names)}
    st.plotly_chart(charts.class_counts_bar({labels[k]: v for k, v in info.counts.items()}), key="data_counts")


def samples_ui(info) -> None:
    st.subheader("Samples per class")
    for index, (name, display) in enumerate(zip(info.classes, info.display_names)):
        paths = [item.path for item in info.items if item.label == index][:SAMPLES_PER_CLASS]
        st.markdown(f"**{display}** (`{name}`, {info.counts[name]} photos)")
        widgets.file_grid_ui(paths)


def problems_ui(info) -> None:
    if info.unreadable:
        st.subheader(f"{len(info.unreadable)} unreadable files (skipped)")
        st.dataframe(pd.DataFrame([(dataset_picker.display_path(p, info.root), why) for p, why in info.unreadable],
                                  columns=["file", "reason"]),
                     hide_index=True, key="data_unreadable")
    if info.missing:
        st.warning(f"{len(info.missing)} ids in the CSV have no image file: {', '.join(info.missing[:10])}…")
    if info.unlisted:
        st.warning(f"{len(info.unlisted)} image files are not listed in the CSV (ignored).")


def data_page() -> None:
    st.title("Data")
    st.write("Choose a dataset (or upload a `.zip`): one sub-folder per class, or the Kaggle layout "
             "(`train.csv` + `train/`).")
    folder = dataset_picker.dataset_picker_ui("data_folder", folder_label="Dataset folder")
    dataset_picker.delete_dataset_ui(folder, key="data")
    # in public mode only the owner adds photos, and a rescan forgets every visitor's scans
    if access.can_manage() and st.button("Rescan", key="data_rescan", icon=":material/refresh:"):
        loaders.clear_scans()
    if folder is None:
        return
    info = None
    with widgets.user_errors(stop=False):
        info = loaders.scan_dataset(str(folder))
    if info is None:
        health.clear_ui(folder)  # a bad row in the decisions file stops the scan: offer to clear it
        return
    summary_ui(info)
    health.decisions_ui(info)
    problems_ui(info)
    health.health_ui(folder)
    samples_ui(info)


page_frame()
data_page()
