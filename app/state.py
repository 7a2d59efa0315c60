"""Process-wide resources for the portal (cached once per server process)."""

from __future__ import annotations

import streamlit as st

from backend.db import migrate


@st.cache_resource(show_spinner="Preparing the database…")
def ensure_database() -> bool:
    """Apply migrations once per portal process so pages can assume the schema exists."""
    migrate()
    return True
