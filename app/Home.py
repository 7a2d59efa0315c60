"""Portal entry: page config, the database check and the menu. It only routes."""

import sys
from pathlib import Path

# Streamlit puts app/ on sys.path, not the repository root that holds backend/ and app/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.state import ensure_database  # noqa: E402

st.set_page_config(page_title="Sextant", page_icon=":material/explore:", layout="wide")
ensure_database()

# Only components that work are listed; each later component adds its page here.
navigation = st.navigation(
    {
        "Analysis": [
            st.Page("../pages/dashboard.py", title="Dashboard", icon=":material/dashboard:", default=True),
        ],
        "Data": [
            st.Page("../pages/datasets.py", title="Datasets", icon=":material/dataset:", url_path="datasets"),
        ],
        "Model development": [
            st.Page("../pages/training.py", title="Training", icon=":material/model_training:", url_path="training"),
            st.Page("../pages/experiments.py", title="Experiments", icon=":material/science:", url_path="experiments"),
        ],
        "Deploy & use": [
            st.Page("../pages/registry.py", title="Model registry", icon=":material/inventory_2:", url_path="registry"),
            st.Page("../pages/online.py", title="Online prediction", icon=":material/bolt:", url_path="online"),
            st.Page("../pages/batch.py", title="Batch prediction", icon=":material/table_view:", url_path="batch"),
        ],
    }
)
st.sidebar.caption("Sextant · self-hosted ML platform")
navigation.run()
