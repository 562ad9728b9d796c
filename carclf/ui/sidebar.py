"""The sidebar shown on every page: which model answers (and what it is), and what hardware the app runs on."""

from __future__ import annotations

import streamlit as st

from carclf.ui import loaders, settings, widgets

# session_state key of the chosen model. Every page draws the picker itself, and Streamlit forgets a widget's
# state when the page that drew it changes, so the choice is kept under this plain key and copied into the
# widget's own key (PICKER_KEY) on each run.
MODEL_KEY = "carclf_model"
PICKER_KEY = "carclf_model_picker"
# The picker's value for the built-in default model (bundle choices are folder paths).
DEFAULT_CHOICE = "default"


def model_choices() -> dict[str, str]:
    """Choice value -> label: trained bundles in the models folder (newest first), then the default model."""
    from carclf.bundle import list_bundles

    choices: dict[str, str] = {}
    with widgets.user_errors(stop=False):
        for info in list_bundles(settings.models_dir()):
            choices[str(info.path)] = _bundle_label(info)
    choices[DEFAULT_CHOICE] = "Default: ImageNet body type (no training)"
    return choices


def _bundle_label(info) -> str:
    """'name (val acc 91.2% (TTA))': the exported model's headline score; marked when it is the folder's default."""
    from carclf.run_summary import headline_text

    score = headline_text(info.meta.get("val_metrics"))
    label = f"{info.name} ({score})" if score else info.name
    return f"{label} ★" if info.is_default else label


def model_picker_ui() -> str | None:
    """Sidebar select box of models; returns the chosen bundle folder, or None for the default model."""
    choices = model_choices()
    if st.session_state.get(MODEL_KEY) not in choices:
        st.session_state[MODEL_KEY] = next(iter(choices))  # newest bundle, or the default model
    st.session_state[PICKER_KEY] = st.session_state[MODEL_KEY]
    st.sidebar.selectbox(
        "Model",
        options=list(choices),
        format_func=choices.get,
        key=PICKER_KEY,
        on_change=_remember_choice,
        help=f"Trained bundles from {'the app' if settings.is_public() else settings.models_dir()} (newest first) "
             "and the built-in default model.",
    )
    chosen = selected_model()
    model_card_ui(chosen)
    return chosen


def model_card_ui(path: str | None) -> None:
    """'About this model' under the picker: the bundle's card from its meta.json (no model load)."""
    from carclf.bundle import read_bundle_meta
    from carclf.default_model import NOTICE
    from carclf.model_card import model_card

    with st.sidebar.expander("About this model", icon=":material/info:"):
        if path is None:
            st.caption(NOTICE)
            return
        with widgets.user_errors(stop=False):
            meta = read_bundle_meta(path)
            st.markdown("\n".join(f"- **{label}**: {widgets.markdown_text(text)}"
                                   for label, text in model_card(meta, show_paths=not settings.is_public())))


def _remember_choice() -> None:
    st.session_state[MODEL_KEY] = st.session_state[PICKER_KEY]


def select_bundle(bundle) -> bool:
    """Make ``bundle`` (a folder in the models folder) the sidebar's model from the next run; False if not listed."""
    from pathlib import Path

    wanted = Path(bundle).resolve()
    for choice in model_choices():
        if choice != DEFAULT_CHOICE and Path(choice).resolve() == wanted:
            st.session_state[MODEL_KEY] = choice
            return True
    return False


def selected_model() -> str | None:
    """The model chosen in the sidebar: a bundle folder, or None for the default model."""
    choice = st.session_state.get(MODEL_KEY, DEFAULT_CHOICE)
    return None if choice == DEFAULT_CHOICE else choice


def device_ui() -> None:
    """One sidebar line saying whether training and inference will use a GPU."""
    gpus = loaders.gpu_info()
    if gpus:
        names = ", ".join(gpu["name"] for gpu in gpus)
        st.sidebar.success(f"GPU: {names}", icon=":material/memory:")
    else:
        st.sidebar.caption(":material/memory: No GPU: running on CPU (training is slow; use the `quick` preset).")
