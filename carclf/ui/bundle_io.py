"""Models in and out of the dashboard: download a bundle as one file, upload one (validated), delete one,
and fetch the bundle named by CARCLF_MODEL_URL once per server process.

The file format and its checks belong to carclf.bundle_file; this module only lays out the widgets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import streamlit as st

from carclf.ui import access, settings, sidebar, widgets

MODEL_URL_ENV = "CARCLF_MODEL_URL"  # a bundle file fetched into the models folder at start
MODEL_SHA256_ENV = "CARCLF_MODEL_SHA256"  # its expected SHA-256 (optional)
# Prefix of the temp folders holding packed bundle files.
PACK_PREFIX = "carclf-bundle-"
# session_state key of the upload's result message, shown after the rerun that selects the new bundle.
UPLOAD_MESSAGE_KEY = "bundle_upload_message"
UPLOAD_KEY = "bundle_upload"

_pack_lock = threading.Lock()
# bundle folder -> (its mtime when packed, the packed file): one file per bundle, shared by all sessions.
_packed: dict[str, tuple[float, Path]] = {}


def packed_bundle(path) -> Path:
    """One file holding bundle folder ``path``, packed once per bundle version and shared by all sessions.

    At most one packed file per bundle is kept (in the system temp folder): a newer version replaces it.
    """
    from carclf.bundle_file import pack_bundle

    path = Path(path)
    stamp = path.stat().st_mtime
    with _pack_lock:
        known = _packed.get(str(path))
        if known and known[0] == stamp and known[1].is_file():
            return known[1]
        if known:
            shutil.rmtree(known[1].parent, ignore_errors=True)
        out = Path(tempfile.mkdtemp(prefix=PACK_PREFIX)) / f"{path.name}.zip"
        _packed[str(path)] = (stamp, Path(pack_bundle(path, out)))
        return _packed[str(path)][1]


def download_bundle_button(path, key: str, container=None, label: str = "Download model file") -> None:
    """A download button for a bundle as one .zip; the file is packed only when the button is clicked."""
    container = container or st
    path = Path(path)
    container.download_button(label, data=lambda: packed_bundle(path).read_bytes(), file_name=f"{path.name}.zip",
                              mime="application/zip", key=key, on_click="ignore", icon=":material/download:",
                              help="The trained bundle as one file (format version and checksums inside): "
                                   "upload it in another carclf app, or `python -m carclf bundle unpack` it.")


def _select_bundle(path: Path) -> None:
    """Make the sidebar picker choose bundle ``path`` on the next run."""
    for choice in sidebar.model_choices():
        if choice != sidebar.DEFAULT_CHOICE and Path(choice).name == path.name:
            st.session_state[sidebar.MODEL_KEY] = choice
            return


def upload_bundle_ui() -> None:
    """Sidebar uploader of a bundle file (owner only in public mode); a valid one is selected at once."""
    if not access.can_manage():
        return
    message = st.session_state.pop(UPLOAD_MESSAGE_KEY, None)
    if message:
        st.sidebar.success(message, icon=":material/check:")
    uploaded = st.sidebar.file_uploader("Upload a model file (.zip)", type=["zip"], key=UPLOAD_KEY,
                                        max_upload_size=settings.max_upload_mb(),
                                        help="A bundle file downloaded from a carclf app or made with "
                                             "`python -m carclf bundle pack`.")
    if uploaded is None:
        return
    done = st.session_state.setdefault(f"{UPLOAD_KEY}_done", set())
    if uploaded.file_id in done:  # the uploader keeps the file across reruns: unpack it once
        return
    done.add(uploaded.file_id)
    from carclf.bundle_file import unpack_bundle

    with st.sidebar, widgets.user_errors(stop=False):
        if uploaded.size > settings.max_upload_bytes():
            st.error(f"{uploaded.name} is {uploaded.size / 1e6:.0f} MB: the limit is "
                     f"{settings.max_upload_bytes() / 1e6:.0f} MB.", icon=":material/error:")
            return
        with st.spinner(f"Checking {uploaded.name}…"):
            path = Path(unpack_bundle(uploaded, settings.models_dir(), limits=settings.archive_limits(),
                                      quota=settings.quota()))
        _select_bundle(path)
        st.session_state[UPLOAD_MESSAGE_KEY] = f"Model {path.name} added and selected."
        st.rerun()


def delete_bundle_ui(path: str | None) -> None:
    """Owner-only 'Delete this model' with a confirmation, for the bundle chosen in the sidebar."""
    from carclf.bundle import delete_bundle

    if path is None or not access.can_manage():
        return
    name = Path(path).name
    with st.sidebar:
        if widgets.confirm_ui("Delete this model", key="bundle_delete",
                              question=f"Delete model **{name}** from the server?"):
            with widgets.user_errors(stop=False):
                delete_bundle(settings.models_dir(), name)
                st.session_state.pop(sidebar.MODEL_KEY, None)
                st.rerun()


def model_files_ui(path: str | None) -> None:
    """Sidebar: download the selected bundle, upload another, delete the selected one."""
    if path is not None and Path(path).is_dir():
        download_bundle_button(path, key="bundle_download", container=st.sidebar)
    delete_bundle_ui(path)
    upload_bundle_ui()


# Per server process: whether CARCLF_MODEL_URL was handled, and how it went. A module global, not
# st.cache_resource, which any visitor can clear (and so make the server download the model again).
_ENV_MODEL_STATE = {"lock": threading.Lock(), "done": False, "path": None, "error": None}


def _env_model_state() -> dict:
    return _ENV_MODEL_STATE


def _model_env() -> dict[str, str]:
    """os.environ plus the model URL / checksum from st.secrets (environment first)."""
    env = dict(os.environ)
    for name in (MODEL_URL_ENV, MODEL_SHA256_ENV):
        value = settings.setting(name)
        if value:
            env[name] = str(value)
    return env


def ensure_env_model_ui() -> None:
    """Once per server process: fetch the bundle named by CARCLF_MODEL_URL (progress line; clear error)."""
    from carclf.errors import CarclfError

    state = _env_model_state()
    if not state["done"]:
        env = _model_env()
        with state["lock"]:
            if not state["done"] and env.get(MODEL_URL_ENV):
                from carclf.bundle_file import ensure_model_from_env

                bar = st.progress(0.0, text=f"Fetching the model from {MODEL_URL_ENV}…")

                def progress(done: int, total: int | None) -> None:
                    text = f"Fetching the model: {done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else "")
                    bar.progress(min(1.0, done / total) if total else 0.0, text=text)

                try:
                    state["path"] = ensure_model_from_env(settings.models_dir(), env=env, progress=progress)
                except CarclfError as error:
                    state["error"] = f"Could not fetch the model from {MODEL_URL_ENV}: {error}"
                bar.empty()
            state["done"] = True
    if state["error"]:
        st.sidebar.error(state["error"], icon=":material/error:")
