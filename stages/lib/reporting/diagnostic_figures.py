"""The report's "why" figures: the activations themselves, and the training diagnostics.

`activations.png` shows each activation of the grid and its derivative (where the derivative is
near zero, gradients vanish); `gradient_norms.png` and `dead_saturated.png` show what that did to
the hidden layers during training (docs/diagnostics.md defines the measures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.figure_kit import integer_ticks, new_figure, percent_axis, save, tall
from stages.lib.reporting.study_table import combination_label

SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805  # Keras' constants
NORM_FLOOR = 1e-10  # a zero gradient norm is drawn here on the log axis
SMALL_LABEL = {"va": "center", "fontsize": 7}


def activation_curve(
    name: str, settings: Mapping[str, Any], x: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(f(x), f'(x)) of the Keras activation type `name` with its effective settings."""
    positive = x > 0
    if name in ("relu", "leaky_relu"):
        slope = settings.get("negative_slope", 0.0) if name == "leaky_relu" else 0.0
        return np.where(positive, x, slope * x), np.where(positive, 1.0, slope)
    if name in ("elu", "selu"):
        alpha = settings.get("alpha", 1.0) if name == "elu" else SELU_ALPHA
        scale = SELU_SCALE if name == "selu" else 1.0
        negative = alpha * np.expm1(np.minimum(x, 0.0))
        return scale * np.where(positive, x, negative), scale * np.where(
            positive, 1.0, negative + alpha
        )
    if name == "tanh":
        return np.tanh(x), 1.0 - np.tanh(x) ** 2
    if name == "sigmoid":
        value = 1.0 / (1.0 + np.exp(-x))
        return value, value * (1.0 - value)
    if name == "gelu":  # Keras' default, the exact form x * Phi(x)
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
        density = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
        return x * cdf, cdf + x * density
    raise ValueError(f"activation: {name!r} has no formula for the figure")


def save_activations(
    activations: Sequence[str], settings: Mapping[str, Mapping[str, Any]], target: Path
) -> None:
    """Each activation of the grid (left) and its derivative (right) over [-5, 5]."""
    x = np.linspace(-5.0, 5.0, 1001)
    figure = new_figure(11.0, 4.4)
    value_axis, slope_axis = figure.subplots(1, 2)
    for name in activations:
        shown = {k: v for k, v in settings[name].items() if (k, v) != ("type", name)}
        hyper = ", ".join(f"{key}={value}" for key, value in shown.items())
        label = f"{name} ({hyper})" if hyper else name
        value, slope = activation_curve(settings[name].get("type", name), settings[name], x)
        (line,) = value_axis.plot(x, value, label=label)
        slope_axis.plot(x, slope, color=line.get_color(), label=label)
    for axis, title, ylabel in (
        (value_axis, "Activation f(x)", "f(x)"),
        (slope_axis, "Derivative f'(x): near 0, gradients vanish", "f'(x)"),
    ):
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.axvline(0.0, color="grey", linewidth=0.8)
        axis.set_xlabel("Pre-activation x")
        axis.set_ylabel(ylabel)
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("The activations of the grid, with the hyperparameters from params.yaml")
    save(figure, target)


def save_gradient_norms(
    diagnostics: pd.DataFrame, activations: Sequence[str], target: Path
) -> None:
    """Per activation: gradient norm of each hidden layer's kernel per epoch (log scale).

    Lines are geometric means over the activation's cells, bands span their min to max.
    """
    figure = new_figure(4.2 * len(activations), 4.2)
    axes = figure.subplots(1, len(activations), sharey=True, squeeze=False)[0]
    for axis, activation in zip(axes, activations, strict=True):
        rows = diagnostics[diagnostics["activation"] == activation]
        norms = rows.assign(grad_norm=np.maximum(rows["grad_norm"], NORM_FLOOR))
        grouped = norms.groupby(["layer", "epoch"])["grad_norm"]
        for layer in sorted(rows["layer"].unique(), key=_layer_number):
            mean = np.exp(grouped.apply(lambda s: np.log(s).mean()).loc[layer])
            (line,) = axis.plot(mean.index, mean.to_numpy(), marker="o", markersize=3, label=layer)
            low, high = grouped.min().loc[layer], grouped.max().loc[layer]
            axis.fill_between(low.index, low, high, color=line.get_color(), alpha=0.15)
        axis.set_yscale("log")
        integer_ticks(axis)
        axis.set_xlabel("Epoch (0 = at initialization)")
        axis.set_title(f"activation: {activation}")
        axis.grid(alpha=0.3, which="both")
        axis.legend(title="hidden layer", fontsize=8)
    axes[0].set_ylabel("Gradient norm of the layer's kernel")
    figure.suptitle("Gradient norms per hidden layer (geometric mean over cells; band: min to max)")
    save(figure, target)


def _layer_number(layer: str) -> int:
    suffix = layer.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def save_dead_saturated(fractions: pd.DataFrame, combinations: pd.DataFrame, target: Path) -> None:
    """Dead (ReLU family) and saturated (sigmoid, tanh) unit fractions per combination."""
    table = combinations[[*FACTORS, "combination", "test_accuracy_mean"]].merge(
        fractions, on=list(FACTORS)
    )
    labels = [
        f"{combination_label(r)}  ({r['test_accuracy_mean']:.2%})" for _, r in table.iterrows()
    ]
    positions = np.arange(len(table))
    figure = new_figure(12.0, tall(len(table), 0.38))
    axes = figure.subplots(1, 2, sharey=True)
    for axis, measure, title in (
        (axes[0], "dead_fraction", "Dead units (ReLU family: never active on the probe)"),
        (axes[1], "saturated_fraction", "Saturated units (sigmoid, tanh)"),
    ):
        for offset, moment, color in ((-0.2, "start", "#9ecae1"), (0.2, "end", "#08519c")):
            values = table[f"{measure}_{moment}"].to_numpy(dtype=float)
            axis.barh(positions + offset, np.nan_to_num(values), 0.4, color=color, label=moment)
            for position, value in zip(positions, values, strict=True):
                if not np.isnan(value):
                    axis.text(value + 0.01, position + offset, f"{value:.0%}", **SMALL_LABEL)
        for position in positions[table[f"{measure}_start"].isna().to_numpy()]:
            axis.text(0.01, position, "does not apply", color="grey", **SMALL_LABEL)
        axis.set_xlim(0, 1.12)
        percent_axis(axis, "x")
        axis.set_xlabel("Share of hidden units (mean over layers and seeds)")
        axis.set_title(title, fontsize=10)
        axis.legend(title="training", fontsize=8)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("Combination (mean test accuracy)")
    figure.suptitle("Dead and saturated hidden units at the start and the end of training")
    save(figure, target)
