"""What the study report says, in the order a reader needs it: question, grid, answer, evidence.

Built once as blocks; stages/lib/study_html.py renders them as summary.md and index.html.
"""

from __future__ import annotations

import pandas as pd

from stages.lib.cell_results import FACTORS
from stages.lib.config import Params
from stages.lib.study_format import (
    MISSING,
    cells_display,
    combinations_display,
    count,
    describe,
    ranking,
)
from stages.lib.study_html import Block, Bullets, FigureBlock, Heading, Paragraph, Table
from stages.lib.study_table import best_and_worst

# Figure file -> (title, caption); `{confidence}` is filled in.
FIGURES: dict[str, tuple[str, str]] = {
    "main_effects.png": (
        "Main effects",
        "Mean test accuracy per level of each factor, the other factors averaged out. Bars: "
        "{confidence} Student-t intervals over seeds (the per-seed means are the replicates).",
    ),
    "interactions.png": (
        "Interactions",
        "Mean test accuracy of every activation x initializer pair, one panel per optimizer. "
        "An effect that changes colour across a row or a panel depends on the other factors.",
    ),
    "learning_curves.png": (
        "Learning curves",
        "Validation accuracy per epoch, mean over all cells sharing a level. Cells stopped "
        "early leave the mean after their last epoch.",
    ),
    "per_digit.png": (
        "Per-digit accuracy",
        "Test accuracy on each digit (its recall) for every combination, mean over seeds, "
        "best combination first: which digits the weak combinations lose.",
    ),
    "activations.png": (
        "The activations",
        "Each activation of the grid and its derivative over [-5, 5], with the hyperparameters "
        "from `params.yaml`. Where the derivative is near zero, gradients vanish.",
    ),
    "gradient_norms.png": (
        "Gradient norms",
        "Norm of the loss gradient with respect to each hidden layer's kernel on a fixed probe "
        "batch, per epoch (0 = at initialization), geometric mean over the activation's cells; "
        "the band spans their minimum to maximum. Falling towards the first layer: vanishing.",
    ),
    "dead_saturated.png": (
        "Dead and saturated units",
        "Share of hidden units that are dead (ReLU family: never active on the probe batch) or "
        "saturated (sigmoid, tanh: flat on most probe examples) at initialization and at the "
        "end of training, mean over layers and seeds, beside each combination's accuracy.",
    ),
}


def build(
    params: Params,
    cells: pd.DataFrame,
    combinations: pd.DataFrame,
    effects: pd.DataFrame,
    figures: list[str],
    convergence: str,
) -> tuple[str, list[Block]]:
    """The title and blocks of the report; `figures` are the figure files that were drawn;
    `convergence` says whether the cells finished learning (stages/lib/study_convergence.py)."""
    train, confidence = params.train, params.report.confidence
    best, worst = best_and_worst(combinations)
    counts = [len(getattr(train, axis)) for axis in (*FACTORS, "seed")]
    architectures = ", ".join(f"{n} {train.architectures[n]}" for n in train.architecture)
    patience = train.early_stopping_patience
    stopping = f"early stopping after {patience} epochs without a better validation loss"
    blocks: list[Block] = [
        Paragraph(
            "**The question:** how do the activation function, the weight initializer and the "
            "optimizer change what a multilayer perceptron learns on MNIST? Every combination "
            f"below is trained with {count(len(train.seed), 'seed')} and scored on the test "
            f"split; numbers are means over seeds with {confidence:.0%} Student-t confidence "
            f"intervals ({MISSING} where one seed leaves no spread to estimate)."
        ),
        Heading("The grid"),
        Bullets(
            (
                *(f"{f}: {', '.join(map(str, getattr(train, f)))}" for f in (*FACTORS, "seed")),
                f"{len(cells)} cells = {' x '.join(map(str, counts))}; hidden layers of each "
                f"architecture: {architectures}; each cell: "
                f"up to {train.epochs} epochs" + (f", {stopping}" if patience else ""),
            )
        ),
        Paragraph(f"**Convergence:** {convergence}"),
        Heading("Best and worst"),
        Bullets((f"Best {describe(best, confidence)}", f"Worst {describe(worst, confidence)}")),
        Paragraph("Main effects (each level's mean over the other factors, best first):"),
        Bullets(tuple(ranking(effects, factor) for factor in FACTORS)),
        Heading("Combinations, best first"),
        Paragraph("Means over seeds (`combinations.csv` has every number, unrounded)."),
        Table(combinations_display(combinations, confidence)),
        Heading("Figures"),
    ]
    for file in figures:
        title, caption = FIGURES[file]  # every figure drawn has its caption here
        blocks.append(FigureBlock(file, title, caption.format(confidence=f"{confidence:.0%}")))
    blocks += [
        Heading("Cells"),
        Paragraph("One row per trained cell; digit columns are test accuracy per digit."),
        Table(cells_display(cells)),
    ]
    return f"Study report: {params.study.name}", blocks
