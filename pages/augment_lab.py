"""Augmentation lab: build an augmentation from the transform registry, see seeded random draws on a
photo, and save it under a name the Train page offers."""

from __future__ import annotations

import numpy as np
import streamlit as st
import yaml

from carclf import augment
from carclf.augment_registry import TRANSFORMS
from carclf.images import load_preview
from carclf.ui.navigation import page_frame
from carclf.ui import access, aug_widgets, loaders, photo_upload, settings, widgets, work_slot

# Longer side the photo is shrunk to before augmenting: training shrinks every photo to about 1.3x the model
# input before its transforms anyway, and a full-size 50 MP upload cost ~200 MB per copy.
PHOTO_SIDE = 1024
# Side of the augmented previews (the pipeline's final resize), px.
PREVIEW_SIZE = 224
# Width of one draw's tile: four to a row beside the transform settings on a laptop, two on a phone.
DRAW_TILE_PX = 125
# Random draws shown in the grid by default, and at most.
DEFAULT_DRAWS, MAX_DRAWS = 8, 24
# session_state key of the seed the grid is drawn with ("New seed" advances it).
SEED_KEY = "aug_seed"


def photo_ui() -> np.ndarray:
    """The photo to augment: an upload, or one of the shipped samples."""
    samples = {p.name: p for p in loaders.list_samples()}
    cols = st.columns(2)
    sample = cols[0].selectbox("Sample photo", list(samples), key="aug_sample")
    uploads = photo_upload.photo_uploader("…or your own photo", key="aug_upload", container=cols[1])
    with widgets.user_errors(), work_slot.work_slot():  # a 50 MP upload decodes like a model call: one at a time
        return np.asarray(load_preview(uploads[0] if uploads else samples[sample], PHOTO_SIDE))


def start_config_ui() -> tuple[str, augment.AugConfig]:
    named = augment.list_named(settings.augment_dir())
    names = list(named)
    base = st.selectbox("Start from", names, index=names.index("default") if "default" in names else 0,
                        key="aug_base", help="Built-in presets and configs saved here before.")
    with widgets.user_errors():
        return base, augment.load_named(base, settings.augment_dir())


def config_ui(base_name: str, base: augment.AugConfig) -> dict:
    """Transform choice and per-transform widgets; keys include the starting config so choosing another
    one resets the widgets to its values."""
    key = f"aug_{base_name}"
    start = {entry.name: entry for entry in base.transforms}
    chosen = st.multiselect("Transforms (applied in this order)", list(TRANSFORMS), default=list(start),
                            key=f"{key}_transforms")
    strength = st.slider("Global strength (0 = off, 1 = as set, 2 = twice as strong)", augment.MIN_STRENGTH,
                         augment.MAX_STRENGTH, float(base.strength), 0.05, key=f"{key}_strength")
    entries = []
    for name in chosen:
        spec = TRANSFORMS[name]
        with st.expander(f"{name} · {spec.group}", expanded=False):
            if spec.help:
                st.caption(spec.help)
            entries.append(aug_widgets.transform_ui(spec, start.get(name), f"{key}_{name}"))
    return {"strength": strength, "transforms": entries}


def grid_ui(config: augment.AugConfig, photo: np.ndarray) -> None:
    cols = st.columns([2, 1])
    draws = cols[0].slider("Random draws", 1, MAX_DRAWS, DEFAULT_DRAWS, key="aug_draws")
    st.session_state.setdefault(SEED_KEY, 0)
    if cols[1].button("New seed", key="aug_new_seed", icon=":material/casino:"):
        st.session_state[SEED_KEY] += 1
    seed = st.session_state[SEED_KEY]
    with widgets.user_errors():
        compose = augment.build_compose(config, PREVIEW_SIZE, seed=seed)
        images = [compose(image=photo)["image"] for _ in range(draws)]
    st.caption(f"Seed {seed}: the same seed and settings always give the same draws.")
    widgets.image_grid_ui(images, [f"draw {i + 1}" for i in range(draws)], tile_px=DRAW_TILE_PX)


def save_ui(config: augment.AugConfig) -> None:
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    st.code(text, language="yaml")
    cols = st.columns([2, 1, 1])
    name = cols[0].text_input("Name", key="aug_name", placeholder="e.g. my-aug")
    # Saving writes to the server (and the owner's Train page), so a public app's visitors download instead.
    blocked = access.manage_blocked_reason()
    if cols[1].button("Save for training", key="aug_save", icon=":material/save:",
                      disabled=not name.strip() or bool(blocked), help=blocked or None):
        with widgets.user_errors(stop=False):
            path = augment.save_named(config, name, settings.augment_dir())
            st.success(f"Saved as `{path.stem}`: the Train page offers it now.")
    cols[2].download_button("Download YAML", text, file_name=f"{name.strip() or 'augmentation'}.yaml",
                            mime="application/x-yaml", key="aug_download", icon=":material/download:")


def augment_lab_page() -> None:
    st.title("Augmentation lab")
    photo = photo_ui()
    left, right = st.columns([1, 2])
    with left:
        base_name, base = start_config_ui()
        data = config_ui(base_name, base)
    with widgets.user_errors():
        config = augment.AugConfig.from_dict(data)
    with right:
        grid_ui(config, photo)
    st.subheader("Pipeline")
    save_ui(config)


page_frame()
augment_lab_page()
