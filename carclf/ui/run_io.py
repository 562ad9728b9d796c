"""Runs into the dashboard: the upload of a run archive (``python -m carclf runs pack``), owner-only.

The archive format and its checks belong to carclf.run_archive; this module only lays out the widgets.
"""

from __future__ import annotations

import streamlit as st

from carclf.ui import access, settings, widgets

UPLOAD_KEY = "run_archive_upload"


def import_run_ui() -> str | None:
    """An uploader for a run archive (owner only in public mode); returns the new run's id once imported."""
    if not access.can_manage():
        return None
    with st.expander("Import a run trained elsewhere", icon=":material/upload:"):
        uploaded = st.file_uploader(
            "Run archive (.zip)", type=["zip"], key=UPLOAD_KEY, max_upload_size=settings.max_upload_mb(),
            help="A file made by `python -m carclf runs pack RUN OUT.zip` (on a Kaggle or Colab GPU, say): the "
                 "run shows here with its curves, read-only.")
    if uploaded is None:
        return None
    done = st.session_state.setdefault(f"{UPLOAD_KEY}_done", set())
    if uploaded.file_id in done:  # the uploader keeps the file across reruns: import it once
        return None
    done.add(uploaded.file_id)
    from carclf.run_archive import import_run

    with widgets.user_errors(stop=False):
        if uploaded.size > settings.max_upload_bytes():
            st.error(f"{uploaded.name} is {uploaded.size / 1e6:.0f} MB: the limit is "
                     f"{settings.max_upload_bytes() / 1e6:.0f} MB.", icon=":material/error:")
            return None
        with st.spinner(f"Checking {uploaded.name}…"):
            run_id = import_run(uploaded, settings.runs_dir(), limits=settings.archive_limits(),
                                quota=settings.quota())
        st.success(f"Run {run_id} imported (read-only): its curves are below.", icon=":material/check:")
        return run_id
    return None
