"""MLflow "model from code" entry: MLflow runs this file to build the logged model's Python object."""

from mlflow.models import set_model

try:
    # Inside a logged model, MLflow puts the model's code/ folder (holding tabular_model.py) on sys.path.
    from tabular_model import SextantPyfuncModel
except ImportError:
    # While the model is being logged, MLflow runs this file from the Sextant tree.
    from backend.training.tabular_model import SextantPyfuncModel

set_model(SextantPyfuncModel())
