"""Shared UI for the Streamlit portal: cached resources, chart builders and formatting."""
