"""Streamlit-only helpers for the dashboard (app.py, pages/): cached loaders, the sidebar, small widgets.

Nothing here does ML or knows a file layout: it lays out widgets and calls the carclf modules that do.
Importing this package imports Streamlit, so the library and CLI never import it.
"""
