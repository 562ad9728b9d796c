"""The frame every page shares (page config, sidebar), drawn by the page itself, and app.py's router.

Why the page draws its own frame: Streamlit 1.x still has its old multipage mode. When a folder named
``pages/`` sits beside the entry script, a run goes straight to ``pages/<name>.py`` (skipping app.py) until
some run has called ``st.navigation``: that happens when the first request after a server start is a deep
link or reload such as ``/train``, and on every run of an ``AppTest``. A page that draws its own frame looks
the same either way. The old mode is selected by a class attribute of Streamlit's ``PagesManager``; turning
it off here makes the next run go through app.py's ``st.navigation``.

Still left (2026-12-03, Streamlit 1.67): the very first run after a server start draws the old menu
("app", "augment lab", ...) for a fraction of a second before app.py replaces it. A click in that moment
opens the right page, with the old menu until the next page change. Keep app.py's imports light (no
TensorFlow before ``st.navigation``) so that moment stays short.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

from carclf.ui import access, bundle_io, diagnostics, sidebar

# The page scripts, beside app.py.
PAGES_DIR = Path(__file__).resolve().parents[2] / "pages"

# (script, title, icon): the order is the sidebar's order; the first page opens by default.
PAGES = (
    ("predict.py", "Predict", ":material/photo_camera:"),
    ("augment_lab.py", "Augmentation lab", ":material/auto_fix_high:"),
    ("train.py", "Train", ":material/model_training:"),
    ("evaluate.py", "Evaluate", ":material/fact_check:"),
    ("data.py", "Data", ":material/folder_open:"),
)


def leave_legacy_pages_mode() -> None:
    """Make later runs go through app.py's st.navigation (see the module docstring)."""
    PagesManager.uses_pages_directory = False


def navigation():
    """The page router over pages/*.py (called by app.py)."""
    leave_legacy_pages_mode()
    pages = [st.Page(PAGES_DIR / script, title=title, icon=icon) for script, title, icon in PAGES]
    return st.navigation(pages)


def page_frame() -> None:
    """Call first in every page script: page config and the sidebar (model picker, hardware)."""
    leave_legacy_pages_mode()
    access.refuse_visitor_cache_clears()
    st.set_page_config(page_title="carclf", page_icon=":material/directions_car:", layout="wide")
    diagnostics.require_supported_python()  # before anything can import TensorFlow
    st.sidebar.title("carclf")
    access.owner_login_ui()
    bundle_io.ensure_env_model_ui()
    model = sidebar.model_picker_ui()
    bundle_io.model_files_ui(model)
    sidebar.device_ui()
    diagnostics.diagnostics_ui()
