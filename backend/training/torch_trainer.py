"""PyTorch trainer: a tabular MLP, patience on the validation loss, exported as TorchScript."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import nn

from backend.training.data import PreparedData
from backend.training.metrics import loss
from backend.training.plan import TrainingPlan
from backend.training.tabular_model import TabularPredictor
from backend.training.trainers import FitResult, IterationCallback


class _MLP(nn.Module):
    def __init__(self, inputs: int, outputs: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_size
        layers.append(nn.Linear(width, outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _ProbabilityHead(nn.Module):
    """Logits → class probabilities: what the exported TorchScript module returns for classifiers."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class _RegressionHead(nn.Module):
    """Standardised output → the target's own scale."""

    def __init__(self, net: nn.Module, mean: float, scale: float):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1) * self.scale + self.mean


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream, but it is the format Triton's python backend loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module.eval())


def fit_torch(
    plan: TrainingPlan,
    data: PreparedData,
    metadata: dict[str, Any],
    hyperparameters: dict[str, Any],
    on_iteration: IterationCallback,
) -> FitResult:
    torch.manual_seed(plan.spec.seed)
    generator = torch.Generator().manual_seed(plan.spec.seed)
    classification = plan.task != "regression"
    x_train = torch.from_numpy(data.x_train)
    x_validation = torch.from_numpy(data.x_validation)
    if classification:
        outputs = len(data.classes or [])
        y_train = torch.from_numpy(data.y_train).long()
        criterion: nn.Module = nn.CrossEntropyLoss()
        mean, scale = 0.0, 1.0
    else:
        outputs = 1
        mean = float(data.y_train.mean())
        scale = float(data.y_train.std()) or 1.0
        y_train = torch.from_numpy((data.y_train - mean) / scale).float()
        criterion = nn.MSELoss()
    net = _MLP(
        x_train.shape[1],
        outputs,
        hyperparameters["hidden_size"],
        hyperparameters["num_layers"],
        hyperparameters["dropout"],
    )
    optimizer = torch.optim.AdamW(
        net.parameters(), lr=hyperparameters["learning_rate"], weight_decay=hyperparameters["weight_decay"]
    )
    head: nn.Module = _ProbabilityHead(net) if classification else _RegressionHead(net, mean, scale)
    batch_size = hyperparameters["batch_size"]
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
    epochs_run, interrupted = 0, False
    for epoch in range(hyperparameters["max_epochs"]):
        net.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            output = net(x_train[batch])
            batch_loss = criterion(output if classification else output.squeeze(1), y_train[batch])
            batch_loss.backward()
            optimizer.step()
            total += batch_loss.item() * len(batch)
        train_loss = total / len(order)
        if not classification:
            train_loss = math.sqrt(train_loss) * scale
        head.eval()
        with torch.no_grad():
            scores = head(x_validation).double().numpy()
        validation_loss = loss(plan.task, data.y_validation, scores)
        if not (math.isfinite(validation_loss) and math.isfinite(train_loss)):
            # Diverged: the best epoch so far (if any) is kept; more epochs cannot recover.
            break
        epochs_run = epoch + 1
        if validation_loss < best_loss:
            best_loss, best_epoch, best_state = validation_loss, epoch, copy.deepcopy(net.state_dict())
        if on_iteration(epoch, train_loss, validation_loss):
            interrupted = True
            break
        if epoch - best_epoch >= hyperparameters["patience"]:
            break
    net.load_state_dict(best_state)
    predictor = TabularPredictor(metadata, data.preprocessor, module=_script(head))
    return FitResult(
        predictor=predictor,
        best_iteration=best_epoch,
        iterations=epochs_run,
        best_validation_loss=best_loss,
        interrupted=interrupted,
    )
