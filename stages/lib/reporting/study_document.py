"""What the study report says, in the order a reader needs it: question, grid, answer, evidence.

Built once as blocks; stages/lib/reporting/study_html.py renders them as summary.md and index.html.
"""

from __future__ import annotations

import pandas as pd

from stages.lib.core.config import Params
from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.study_findings import comparisons_display
from stages.lib.reporting.study_format import (
    MISSING,
    cells_display,
    combinations_display,
    count,
    describe,
    ranking,
)
from stages.lib.reporting.study_html import Block, Bullets, FigureBlock, Heading, Paragraph, Table
from stages.lib.reporting.study_table import best_and_worst

# Figure file -> (title, caption); `{confidence}` is filled in.
FIGURES: dict[str, tuple[str, str]] = {
    "main_effects.png": (
        "Main effects",
        "Mean test accuracy per level of each factor, the other factors averaged out. Bars: "
        "{confidence} Student-t intervals over seeds (the per-seed means are the replicates).",
    ),
    "learning_curves.png": (
        "Learning curves",
        "Validation accuracy per epoch, mean over all cells sharing a level. Cells stopped "
        "early leave the mean after their last epoch.",
    ),
    "time_to_target.png": (
        "Time to the validation target",
        "Share of cells whose validation accuracy has reached `report.target_val_accuracy` by "
        "each epoch, per level (Kaplan-Meier: a cell that stopped short of the target, marked |, "
        "counts as not there yet while it was watched, and is never given a time). A curve "
        "further left is faster; one that stays low never gets there.",
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


INTERACTIONS = (
    "Mean test accuracy of every {rows} x {columns} pair over the cells that share it{panels}. "
    "An effect that changes colour across a row or a panel depends on the other factor."
)


def caption(file: str, params: Params) -> tuple[str, str]:
    """(title, caption) of a drawn figure: fixed ones from FIGURES, interactions from params."""
    confidence = f"{params.report.confidence:.0%}"
    for view in params.report.interactions:
        if view.name == file:
            panels = f", one panel per {view.panels}" if view.panels else ""
            title = f"Interactions: {view.rows} x {view.columns}"
            return title, INTERACTIONS.format(rows=view.rows, columns=view.columns, panels=panels)
    title, text = FIGURES[file]  # every other figure drawn has its caption there
    return title, text.format(confidence=confidence)


def build(
    params: Params,
    cells: pd.DataFrame,
    combinations: pd.DataFrame,
    effects: pd.DataFrame,
    comparisons: pd.DataFrame,
    findings: list[str],
    figures: list[str],
    convergence: str,
) -> tuple[str, list[Block]]:
    """The title and blocks of the report; `findings` are the sentences of study_findings.py,
    `figures` the figure files that were drawn; `convergence` says whether the cells finished
    learning (stages/lib/reporting/study_convergence.py)."""
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
        Heading("Findings"),
        Paragraph(
            "Most important first: failures to train, speed, accuracy, what is practically the "
            "same. Levels are compared over matched cells (same other factors and seed): "
            "signed-rank tests for accuracy, loss and gap, exact sign tests for the times to the "
            "target (a cell that never reaches it is censored) and for failures; Holm's "
            f"correction within each outcome and factor; {confidence:.0%} intervals. "
            "[Reading the statistics](../../docs/statistics.md) explains every verdict."
        ),
        Bullets(tuple(findings)),
        Paragraph(
            f"**Convergence** (effects of cells still improving could change): {convergence}"
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
        Heading("Best and worst"),
        Bullets((f"Best {describe(best, confidence)}", f"Worst {describe(worst, confidence)}")),
        Paragraph("Main effects (each level's mean over the other factors, best first):"),
        Bullets(tuple(ranking(effects, factor) for factor in FACTORS)),
        Heading("Combinations, best first"),
        Paragraph(
            "Means over seeds (`combinations.csv` has every number, unrounded). Not shown worse "
            "than best: not significantly worse than the best combination (paired over seeds, "
            "Holm-corrected), or too few seeds where it is behind the best in every seed. Failed "
            "and reached target: cells of the combination; epochs to target: Kaplan-Meier median."
        ),
        Table(combinations_display(combinations, confidence)),
        Heading("Differences between levels"),
        Paragraph(
            "Every outcome, factor and pair of levels, the better level first (`comparisons.csv` "
            "has every number). Pairs for / against: matched pairs that favour each level. "
            "Effect: mean matched difference, or for times the ratio of the better level's time "
            "to the worse's. Holm p: the difference test; same: Holm p of the equivalence test "
            "within the tolerance of `params.yaml`. Verdicts: differs, same, too few (every "
            "decided pair goes one way, too few pairs), undecided."
        ),
        Table(comparisons_display(comparisons, confidence)),
        Heading("Figures"),
    ]
    blocks += [FigureBlock(file, *caption(file, params)) for file in figures]
    blocks += [
        Heading("Cells"),
        Paragraph("One row per trained cell; digit columns are test accuracy per digit."),
        Table(cells_display(cells)),
    ]
    return f"Study report: {params.study.name}", blocks
