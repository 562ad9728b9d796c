"""carclf dashboard: `streamlit run app.py`.

The entry point only routes: each page is one script in pages/ and draws the frame every page shares
(sidebar model picker, hardware) through carclf.ui.navigation.page_frame(). Folders come from
CARCLF_MODELS_DIR / CARCLF_RUNS_DIR / CARCLF_AUGMENT_DIR.
"""

from carclf.ui.navigation import navigation

navigation().run()
