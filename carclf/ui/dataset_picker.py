"""Where a page's photos come from: a named dataset of the app's workspace (imported from an uploaded
``.zip``) or, in local mode only, a folder on the server.

Public mode never takes a server path, so a visitor cannot make the app read `/` or its own source. Paths
shown to visitors are relative to the dataset (``display_path``) for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from carclf.ui import access, settings, widgets

# Icon of the line that reports an imported dataset.
IMPORT_ICON = ":material/unarchive:"
# Skipped archive members listed by name after an import (the rest are counted).
MAX_SKIPPED_SHOWN = 10
# The dataset and (local mode) the folder box's text last used on any page: the next page starts with them,
# so data checked on the Data page is already chosen on Train and Evaluate.
LAST_DATASET_KEY = "carclf_last_dataset"
LAST_FOLDER_KEY = "carclf_last_folder"


def _entries() -> dict[str, object]:
    """Workspace datasets by name (newest first, as carclf.datasets lists them)."""
    from carclf.datasets import list_datasets

    with widgets.user_errors(stop=False):
        return {entry.name: entry for entry in list_datasets(settings.datasets_dir())}
    return {}


def _label(entry) -> str:
    return f"{entry.name} ({entry.n_photos} photos)"


def upload_ui(key: str) -> str | None:
    """A .zip uploader; a new file is imported once (progress bar) and its dataset name returned."""
    from carclf.datasets import import_archive

    uploaded = st.file_uploader(
        "Upload a dataset (.zip)", type=["zip"], key=f"{key}_upload", max_upload_size=settings.max_upload_mb(),
        help="A zip of one folder per class, or of the Kaggle layout (train.csv + train/<class>/<id>.jpg), "
             "with or without one top folder. Non-image files are skipped.",
    )
    if uploaded is None:
        return None
    done_key = f"{key}_imported"
    imported = st.session_state.setdefault(done_key, {})
    if uploaded.file_id in imported:  # reruns keep the file in the uploader: import it only once
        return imported[uploaded.file_id]
    if uploaded.size > settings.max_upload_bytes():
        st.error(f"{uploaded.name} is {uploaded.size / 1e6:.0f} MB: the limit is "
                 f"{settings.max_upload_bytes() / 1e6:.0f} MB.", icon=":material/error:")
        imported[uploaded.file_id] = None
        return None
    bar = st.progress(0.0, text=f"Unpacking {uploaded.name}…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Unpacking {uploaded.name}: {done} / {total} files")

    imported[uploaded.file_id] = None  # a refused archive is not retried on every rerun
    with widgets.user_errors(stop=False):
        report = import_archive(uploaded, settings.datasets_dir(), limits=settings.archive_limits(),
                                quota=settings.quota(), progress=progress)
        imported[uploaded.file_id] = report.name
        counts = ", ".join(f"{name}: {n}" for name, n in report.counts.items())
        st.success(f"Imported dataset **{report.name}** ({report.layout}): {counts}.", icon=IMPORT_ICON)
        if report.skipped:
            listed = "; ".join(f"{member} ({why})" for member, why in report.skipped[:MAX_SKIPPED_SHOWN])
            more = len(report.skipped) - MAX_SKIPPED_SHOWN
            st.warning(f"Skipped {len(report.skipped)} files: {listed}" + (f"; and {more} more." if more > 0 else "."))
        for warning in report.warnings:
            st.warning(warning)
    bar.empty()
    return imported[uploaded.file_id]


def dataset_picker_ui(key: str, folder_label: str = "Dataset folder on this machine", folder_help: str | None = None,
                      allow_upload: bool = True) -> Path | None:
    """The photos to use: a workspace dataset (plus an upload) and, in local mode, a server folder box.

    In local mode a filled folder box wins over the dataset choice. Returns the folder, or None.
    """
    choice_key = f"{key}_dataset"
    # An upload writes to the server's shared workspace: in a public app only the owner may add datasets.
    new_name = upload_ui(key) if allow_upload and access.can_manage() else None
    if allow_upload and not access.can_manage():
        st.caption(":material/lock: Only the app's owner can upload datasets here.")
    entries = _entries()
    if new_name and new_name in entries and st.session_state.get(f"{key}_selected_upload") != new_name:
        st.session_state[choice_key] = new_name  # select what was just uploaded (once)
        st.session_state[f"{key}_selected_upload"] = new_name
    if st.session_state.get(choice_key) is not None and st.session_state[choice_key] not in entries:
        st.session_state.pop(choice_key, None)
    if choice_key not in st.session_state and st.session_state.get(LAST_DATASET_KEY) in entries:
        st.session_state[choice_key] = st.session_state[LAST_DATASET_KEY]  # first visit: another page's choice
    names = list(entries)
    empty = "No dataset yet: upload a .zip" if access.can_manage() else "No dataset yet"
    chosen = st.selectbox("Dataset", names, index=None, key=choice_key, format_func=lambda n: _label(entries[n]),
                          placeholder="Choose a dataset" if names else empty,
                          help="Datasets imported from uploaded archives into the app's workspace.")
    st.session_state[LAST_DATASET_KEY] = chosen
    folder = None
    if not settings.is_public():
        default = st.session_state.get(LAST_FOLDER_KEY, settings.default_data_dir())
        folder = widgets.folder_input_ui(folder_label, key=key, default=default, help=folder_help)
        st.session_state[LAST_FOLDER_KEY] = st.session_state.get(key, "")
    if folder is not None:
        return folder
    return Path(entries[chosen].path) if chosen else None


def display_path(path, root) -> str:
    """A photo's path as shown on a page: relative to its dataset in public mode (no server paths)."""
    path = Path(path)
    if not settings.is_public():
        return str(path)
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def display_root(root) -> str:
    """A dataset folder as shown on a page: its name in public mode, the full path in local mode."""
    return Path(root).name if settings.is_public() else str(root)


def delete_dataset_ui(folder: Path | None, key: str) -> None:
    """Owner-only 'Delete dataset' with a confirmation, for a workspace dataset (never a server folder)."""
    from carclf.datasets import delete_dataset

    if folder is None:
        return
    entries = _entries()
    name = next((n for n, e in entries.items() if Path(e.path) == Path(folder)), None)
    if name is None or not access.can_manage():
        return
    if widgets.confirm_ui(f"Delete dataset {name}", key=f"{key}_delete",
                          question=f"Delete dataset **{name}** and its photos from the workspace?"):
        with widgets.user_errors(stop=False):
            delete_dataset(name, settings.datasets_dir())
            st.session_state.pop(f"{key}_dataset", None)
            st.rerun()
