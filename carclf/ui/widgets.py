"""Small widget functions shared by the pages. Each lays out widgets and returns plain values."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import streamlit as st

from carclf.errors import CarclfError, describe_os_error
from carclf.ui import loaders, settings

# Side of the thumbnails grids decode (px): sharp at a tile's width, small enough to cache many.
THUMBNAIL_PX = 200
# Width of one photo tile of a grid (the sample gallery, dataset samples): five to a row on a laptop, two on a
# phone. Grids are wrapping rows of fixed-width tiles, not st.columns: columns stack one per line on a phone,
# each photo as wide as the screen.
TILE_PX = 170


# Characters st.markdown would read as formatting, links or LaTeX.
MARKDOWN_SPECIAL = set("\\`*_{}[]()<>#+-.!|~$")


@contextlib.contextmanager
def user_errors(stop: bool = True) -> Iterator[None]:
    """Show a carclf error, or a path the system refused, as one red line (never a traceback) and, by
    default, stop the page there."""
    try:
        yield
    except (CarclfError, OSError) as error:
        # the path is hidden before it is shortened, and the whole line again: an OSError without strerror
        # carries its path in its text
        message = describe_os_error(error, settings.hide_paths) if isinstance(error, OSError) else str(error)
        st.error(settings.hide_paths(message), icon=":material/error:")
        if stop:
            st.stop()


def markdown_text(text: str) -> str:
    """``text`` shown literally inside st.markdown: names from folders and files may hold *, _, [ or $."""
    return "".join("\\" + char if char in MARKDOWN_SPECIAL else char for char in text)


def folder_input_ui(label: str, key: str, default: str = "", help: str | None = None) -> Path | None:
    """A text box for a folder on the server; returns the folder or None (with an error) when it is not one."""
    text = st.text_input(label, value=default, key=key, help=help, placeholder="/path/to/folder").strip()
    if not text:
        return None
    folder = Path(text).expanduser()
    try:
        is_folder = folder.is_dir()
    except OSError as error:  # e.g. a pasted paragraph: "File name too long"
        st.error(f"That is not a folder path this machine accepts ({describe_os_error(error)}).")
        return None
    if not is_folder:
        st.error(f"{folder} is not a folder on this machine. Enter the path of an existing folder.")
        return None
    return folder


def sample_gallery_ui(key: str) -> Path | None:
    """Thumbnails of the shipped samples with a button each; returns the chosen sample (kept in session)."""
    state_key = f"{key}_chosen"
    # As tiles: stacked columns put ten full-width photos (4,000 px) between a phone's tabs and the answer.
    with st.container(horizontal=True, wrap=True, gap="small"):
        for path in loaders.list_samples():
            with st.container(width=TILE_PX):
                st.image(loaders.thumbnail_of(path, THUMBNAIL_PX), width="stretch")
                if st.button(path.stem.replace("_", " "), key=f"{key}_{path.stem}", width="stretch"):
                    st.session_state[state_key] = str(path)
    chosen = st.session_state.get(state_key)
    return Path(chosen) if chosen else None


def metric_row():
    """A row for a few ``st.metric``: spread like columns on a laptop, but wrapping several to a line on a
    phone, where st.columns stack each number on its own line (eight metrics filled a phone's screen)."""
    return st.container(horizontal=True, wrap=True)


def image_grid_ui(images: Sequence, captions: Sequence[str], tile_px: int = TILE_PX) -> None:
    """PIL images (or paths) as ``tile_px``-wide tiles with a caption under each, wrapping like text."""
    with st.container(horizontal=True, wrap=True, gap="small"):
        for image, caption in zip(images, captions):
            with st.container(width=tile_px):
                st.image(image, caption=caption, width="stretch")


def file_grid_ui(paths: Sequence[Path], captions: Sequence[str] | None = None, tile_px: int = TILE_PX) -> None:
    """Thumbnails of image files as wrapping tiles; an unreadable file shows its one-line reason instead."""
    captions = list(captions) if captions is not None else [Path(p).name for p in paths]
    with st.container(horizontal=True, wrap=True, gap="small"):
        for path, caption in zip(paths, captions):
            with st.container(width=tile_px), user_errors(stop=False):
                st.image(loaders.thumbnail_of(path, THUMBNAIL_PX), caption=caption, width="stretch")


def _set_state(key: str, value) -> None:
    st.session_state[key] = value


def confirm_ui(label: str, key: str, question: str, confirm: str = "Yes, delete",
               icon: str = ":material/delete:") -> bool:
    """A button that asks before acting: True once, in the run where the user confirmed."""
    pending, confirmed = f"{key}_pending", f"{key}_confirmed"
    if st.session_state.pop(confirmed, False):  # set by the "Yes" callback just before this run
        return True
    if not st.session_state.get(pending):
        st.button(label, key=key, icon=icon, on_click=_set_state, args=(pending, True))
        return False
    st.warning(question, icon=":material/warning:")
    row = st.container(horizontal=True)
    row.button(confirm, key=f"{key}_yes", type="primary", on_click=_confirm, args=(pending, confirmed))
    row.button("Cancel", key=f"{key}_cancel", on_click=_set_state, args=(pending, False))
    return False


def _confirm(pending: str, confirmed: str) -> None:
    st.session_state[pending] = False
    st.session_state[confirmed] = True


def tta_ui(key: str, own: int, model: str, container=st) -> int:
    """A "TTA views" slider (1 = off) that starts at the model's own TTA, and again whenever ``model``
    (whatever names the chosen model) changes, so by default a page scores like the model's own run."""
    from carclf.tta import VIEWS

    shown_for = f"{key}_model"
    if st.session_state.get(shown_for) != model or key not in st.session_state:  # new model, or page revisited
        st.session_state[key] = min(max(own, 1), len(VIEWS))
        st.session_state[shown_for] = model
    return container.slider(
        "TTA views", 1, len(VIEWS), key=key,
        help=f"Average this many flipped/cropped/brightened views of each photo (1 = off; default: the "
             f"model's own, {own}: the views its validation score was measured with).",
    )
