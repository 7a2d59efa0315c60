"""Sextant's platform layer: services, storage and integrations (never imports streamlit)."""
