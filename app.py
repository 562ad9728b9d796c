"""carclf dashboard: `streamlit run app.py`.

The entry point builds the navigation and the sidebar shown on every page (model picker, hardware); each
page is one script in app_pages/. Folders come from CARCLF_MODELS_DIR / CARCLF_RUNS_DIR / CARCLF_AUGMENT_DIR.
"""

from pathlib import Path

import streamlit as st

from carclf.ui import sidebar

# Not "pages/": Streamlit treats a folder of that name as old-style pages, and a deep link or reload on
# /train would then run the page alone, without this script's navigation and sidebar.
PAGES_DIR = Path(__file__).parent / "app_pages"

# (script, title, icon): the order is the sidebar's order; the first page opens by default.
PAGES = (
    ("predict.py", "Predict", ":material/photo_camera:"),
    ("augment_lab.py", "Augmentation lab", ":material/auto_fix_high:"),
    ("train.py", "Train", ":material/model_training:"),
    ("evaluate.py", "Evaluate", ":material/fact_check:"),
    ("data.py", "Data", ":material/folder_open:"),
)


def navigation():
    """The page router over app_pages/*.py."""
    pages = [st.Page(PAGES_DIR / script, title=title, icon=icon) for script, title, icon in PAGES]
    return st.navigation(pages)


def main() -> None:
    st.set_page_config(page_title="carclf", page_icon=":material/directions_car:", layout="wide")
    page = navigation()
    st.sidebar.title("carclf")
    sidebar.model_picker_ui()
    sidebar.device_ui()
    page.run()


main()
