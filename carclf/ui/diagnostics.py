"""What the app runs on, in one line, and the Python version check that must come before TensorFlow.

On a too-new interpreter (Streamlit Community Cloud's default moved to 3.14, for which tensorflow-cpu 2.21
has no wheels) the app should say which versions work instead of failing inside an import. Nothing here
imports TensorFlow: versions are read from the installed packages' metadata.
"""

from __future__ import annotations

import platform
import sys

import streamlit as st

from carclf.requirements_check import TENSORFLOW_DISTRIBUTIONS, installed
from carclf.ui import settings

# The first Python without tensorflow-cpu 2.21 wheels; the versions to tell users to choose instead.
FIRST_UNSUPPORTED_PYTHON = (3, 14)
WORKING_PYTHONS = "3.12 or 3.13"


def python_supported(version: tuple = tuple(sys.version_info[:2])) -> bool:
    """True for a Python that tensorflow-cpu 2.21 publishes wheels for (anything older than 3.14)."""
    return tuple(version[:2]) < FIRST_UNSUPPORTED_PYTHON


def tensorflow_version() -> str | None:
    """The installed TensorFlow version, or None when no TensorFlow is installed (from package metadata)."""
    return installed(TENSORFLOW_DISTRIBUTIONS)[1]


def unsupported_message() -> str:
    """'' when this interpreter can run carclf, else one line saying what to change."""
    python = platform.python_version()
    if not python_supported():
        return (f"Python {python} is too new: TensorFlow has no build for it yet. Use Python {WORKING_PYTHONS} "
                "(on Streamlit Community Cloud: delete the app and deploy it again with Python 3.12 chosen "
                "under Advanced settings).")
    if tensorflow_version() is None:
        return (f"TensorFlow is not installed for Python {python}: run `pip install -r requirements.txt` "
                f"with Python {WORKING_PYTHONS}.")
    return ""


def require_supported_python() -> None:
    """Stop the page with one red line on an interpreter carclf cannot run on (call before any TF import)."""
    message = unsupported_message()
    if message:
        st.error(message, icon=":material/error:")
        st.stop()


def _memory_limit() -> str:
    try:
        from carclf import machine
    except ImportError:  # carclf.machine is optional here
        return ""
    try:
        return f"memory limit {machine.memory_limit_bytes() / 1e9:.1f} GB"
    except Exception:  # a diagnostics line must never take the page down
        return ""


def diagnostics_line() -> str:
    """'Python 3.12.7 · TensorFlow 2.21.0 · public mode · memory limit 2.7 GB'."""
    parts = [f"Python {platform.python_version()}", f"TensorFlow {tensorflow_version() or 'not installed'}",
             f"{settings.mode()} mode", _memory_limit()]
    return " · ".join(part for part in parts if part)


def diagnostics_ui() -> None:
    """The diagnostics line at the bottom of the sidebar (and a warning for a mistyped CARCLF_MODE)."""
    warning = settings.mode_warning()
    if warning:
        st.sidebar.warning(warning)
    st.sidebar.caption(f":material/info: {diagnostics_line()}")
