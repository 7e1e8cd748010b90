"""The statistics in plain words, most important first: failures to train, speed, accuracy, what
is practically the same; then the shared factors and the ties with the best.

Each sentence names its evidence (counts of matched pairs, an interval, a test and its Holm p) and
the figure that shows it. A pair of levels that is not shown different is never called "no
different": it is either shown the same within a stated tolerance, or named as undecided with the
number of seeds that would likely decide it (study_comparisons.py has the rules).
"""

from __future__ import annotations

import math

import pandas as pd

from stages.lib.core.config import CHANCE_ACCURACY, FACTORS, ReportParams
from stages.lib.reporting.study_comparisons import (
    BY_COLUMN,
    DIFFERS,
    OUTCOMES,
    REVERSES,
    SAME,
    TOO_FEW,
    UNDECIDED,
    levels,
    strength,
    varied,
)
from stages.lib.reporting.study_format import MISSING, count, interval_of
from stages.lib.reporting.study_table import combination_label

FIGURE = {
    "failure": "[gradient norms](figures/gradient_norms.png), "
    "[dead and saturated units](figures/dead_saturated.png)",
    "time": "[time to target](figures/time_to_target.png)",
    "speed": "[time to target](figures/time_to_target.png), "
    "[learning curves](figures/learning_curves.png)",
    "accuracy": "[main effects](figures/main_effects.png)",
    "outcomes": "[learning curves](figures/learning_curves.png) and `combinations.csv`",
}
SHOWN = 4  # pairs named per sentence; comparisons.csv has every one


def p_text(p: float) -> str:
    return MISSING if math.isnan(p) else "< 0.001" if p < 0.001 else f"= {p:.2g}"


def _name(factor: str) -> str:
    return factor.replace("_", " ")


def _amount(row: pd.Series) -> str:
    """The effect in words: "0.12 points", "0.31x the epochs", "0.021" (a loss)."""
    outcome = BY_COLUMN[row["outcome"]]
    if outcome.kind == "time":
        what = "the epochs" if outcome.unit == "epochs" else "the seconds"
        if not math.isfinite(row["effect"]):
            return f"no pair where both reached the target to give a ratio of {what}"
        return f"{row['effect']:.2f}x {what} where both reached it"
    unit = f" {outcome.unit}" if outcome.unit else ""
    return f"{row['effect']:.{outcome.digits}f}{unit}"


def _bounds(row: pd.Series) -> str:
    """The effect's interval, "0.21x to 0.32x" for times, "0.39 to 1.95" otherwise."""
    outcome = BY_COLUMN[row["outcome"]]
    if outcome.kind == "time":
        form = lambda v: f"{v:.2f}x"  # noqa: E731
    else:
        form = lambda v: f"{v:.{outcome.digits}f}"  # noqa: E731
    return interval_of(row["ci_low"], row["ci_high"], form)


def _interval(row: pd.Series, confidence: float) -> str:
    return f"{confidence:.0%} CI {_bounds(row)}"


def _test(row: pd.Series) -> str:
    outcome = BY_COLUMN[row["outcome"]]
    test = "signed-rank" if outcome.kind == "measure" else "sign test"
    return f"{test} Holm p {p_text(row['p_holm'])}"


def _votes(row: pd.Series, verb: str) -> str:
    decided = int(row["favour_better"]) + int(row["favour_worse"])
    tail = f", {int(row['pairs']) - decided} undecided or tied" if decided < row["pairs"] else ""
    return f"{verb} in {row['favour_better']} of {count(int(row['pairs']), 'matched pair')}{tail}"


def _seeds(row: pd.Series) -> str:
    needed = row["seeds_needed"]
    if isinstance(needed, float) and math.isnan(needed):
        return "no likely number of seeds would decide it"
    return f"about {int(needed)} seeds would decide it"


def _dependence(row: pd.Series) -> str:
    if not row["depends_on"]:
        return ""
    return (
        f"; it depends on {_name(row['depends_on'])} (ANOVA of the matched differences, "
        f"Holm p {p_text(row['dependence_p_holm'])}): {row['by_level']}"
    )


def comparison_clause(row: pd.Series, confidence: float, tolerance: float = math.nan) -> str:
    """One pair of levels in words, by its verdict (`tolerance`: the outcome's, for a difference
    that is also practically nil)."""
    outcome = BY_COLUMN[row["outcome"]]
    better, worse = row["better"], row["worse"]
    if outcome.kind == "time":
        verb, ahead = "faster", f"{better} is faster than {worse}"
        claim = f"{ahead}: {_amount(row)}"
    elif outcome.kind == "failure":
        verb, ahead = "fails less", f"{better} fails less often than {worse}"
        claim = f"{worse} fails more often than {better} ({_amount(row)} of failure rate)"
    else:
        verb, ahead = "ahead", f"{better} is ahead of {worse}"
        if outcome.higher_is_better:
            claim = f"{better} beats {worse} by {_amount(row)}"
        else:
            claim = f"{better}'s is lower than {worse}'s by {_amount(row)}"
    evidence = f"{_interval(row, confidence)}, {_votes(row, verb)}, {_test(row)}"
    if row["verdict"] == DIFFERS:
        within = (
            f", though within the ±{tolerance:g} tolerance (practically the same)"
            if row["equivalence_p_holm"] < 1.0 - confidence
            else ""
        )
        return f"{claim} ({evidence}){within}{_dependence(row)}"
    if row["verdict"] == REVERSES:
        return (
            f"{better} vs {worse}: the effect reverses with {_name(row['depends_on'])} "
            f"(ANOVA of the matched differences, Holm p {p_text(row['dependence_p_holm'])}): "
            f"{row['by_level']}; no pooled answer ({_amount(row)} overall, {_test(row)})"
        )
    if row["verdict"] == TOO_FEW:
        spread = (
            f"by {row['effect_min']:.{outcome.digits}f} to {row['effect_max']:.{outcome.digits}f}"
            if outcome.kind == "measure"
            else ""
        )
        return (
            f"{ahead} in every decided pair "
            f"({row['favour_better']} of {row['pairs']}{', ' + spread if spread else ''}; "
            f"{_amount(row)}, {_interval(row, confidence)}), but too few pairs to decide at "
            f"{confidence:.0%} ({_test(row)}); {_seeds(row)}{_dependence(row)}"
        )
    return (
        f"{better} vs {worse} not decided ({_amount(row)}, {evidence}); "
        f"{_seeds(row)}{_dependence(row)}"
    )


def _factor_sentences(
    comparisons: pd.DataFrame, outcome: str, report: ReportParams, verdicts: tuple[str, ...]
) -> list[tuple[str, str]]:
    """(factor, clauses) for every factor with comparisons of `outcome` in `verdicts`."""
    confidence = report.confidence
    tolerance = report.tolerance.model_dump().get(outcome, math.nan)
    rows = comparisons[(comparisons["outcome"] == outcome) & comparisons["verdict"].isin(verdicts)]
    found = []
    for factor, group in rows.groupby("factor", sort=False):
        order = group.assign(
            _first=group["verdict"].map({DIFFERS: 0, TOO_FEW: 1, REVERSES: 2, UNDECIDED: 3}),
            _size=[-strength(outcome, effect) for effect in group["effect"]],
        ).sort_values(["_first", "p_holm", "_size"])
        clauses = [
            comparison_clause(row, confidence, tolerance) for _, row in order.head(SHOWN).iterrows()
        ]
        if len(order) > SHOWN:
            clauses.append(f"{len(order) - SHOWN} more pairs in `comparisons.csv`")
        found.append((str(factor), "; ".join(clauses)))
    return found


def failure_sentences(
    cells: pd.DataFrame, comparisons: pd.DataFrame, report: ReportParams
) -> list[str]:
    """Which cells failed to train, with their evidence; which levels fail more often."""
    threshold = CHANCE_ACCURACY + report.failure_margin
    rule = f"best validation accuracy below {threshold:.0%}, chance being {CHANCE_ACCURACY:.0%}"
    if "failed_to_train" not in cells:
        return []
    failed = cells[cells["failed_to_train"].astype(bool)]
    if failed.empty:
        return [f"**Failure to train:** none of the {len(cells)} cells ({rule})."]
    factors = varied(cells) or ["activation"]
    combinations = cells.groupby(factors, sort=False)
    named = []
    for combination, group in failed.groupby(factors, sort=False):
        label = " / ".join(
            map(str, combination if isinstance(combination, tuple) else (combination,))
        )
        total = len(combinations.get_group(combination))
        evidence = [f"test accuracy {group['test_accuracy'].mean():.1%}"]
        ratio = group.get("grad_ratio_init", pd.Series(dtype=float)).astype(float).mean()
        if math.isfinite(ratio):
            evidence.append(
                f"first-to-last hidden layer gradient norm at initialization {ratio:.2g}"
                + (" (vanishing gradients)" if ratio < 0.1 else "")
            )
        for column, what in (
            ("saturated_fraction_end", "saturated"),
            ("dead_fraction_end", "dead"),
        ):
            share = group.get(column, pd.Series(dtype=float)).astype(float).mean()
            if math.isfinite(share) and share >= 0.05:
                evidence.append(f"{share:.0%} of hidden units {what} at the end")
        named.append(f"`{label}` ({len(group)} of {total} seeds; {', '.join(evidence)})")
    measured = "grad_ratio_init" in cells and cells["grad_ratio_init"].notna().any()
    why = FIGURE["failure"] if measured else "turn on `train.diagnostics` for the gradient figures"
    head = (
        f"**Failure to train** ({rule}): {len(failed)} of {len(cells)} cells failed: "
        f"{'; '.join(named[:SHOWN])}"
        + (f"; and {len(named) - SHOWN} more combinations" if len(named) > SHOWN else "")
        + f". Why: {why}."
    )
    sentences = [head]
    for factor, clauses in _factor_sentences(
        comparisons, "failed_to_train", report, (DIFFERS, TOO_FEW, UNDECIDED, REVERSES)
    ):
        sentences.append(f"**Failure to train, {_name(factor)}:** {clauses}.")
    return sentences


def speed_sentences(
    cells: pd.DataFrame, comparisons: pd.DataFrame, report: ReportParams
) -> list[str]:
    """Which levels reach the target validation accuracy in fewer epochs."""
    if "epochs_to_target" not in cells:
        return []
    target = f"{report.target_val_accuracy:.1%}".replace(".0%", "%")
    reached = int(cells["reached_target"].astype(bool).sum()) if "reached_target" in cells else 0
    intro = (
        f"epochs until validation accuracy first reaches {target}; {reached} of {len(cells)} "
        "cells reached it; the others never did: no number, and slower than any that did"
    )
    found = _factor_sentences(
        comparisons, "epochs_to_target", report, (DIFFERS, TOO_FEW, UNDECIDED, REVERSES)
    )
    if not found:
        same = comparisons[
            (comparisons["outcome"] == "epochs_to_target") & (comparisons["verdict"] == SAME)
        ]
        what = (
            "every pair of levels is practically the same (below)"
            if len(same)
            else ("no factor varies")
        )
        return [f"**Speed** ({intro}): {what}."]
    sentences = []
    for factor, clauses in found:
        seconds = comparisons[
            (comparisons["outcome"] == "seconds_to_target")
            & (comparisons["factor"] == factor)
            & (comparisons["verdict"] == DIFFERS)
        ]
        extra = (
            "; in seconds: "
            + "; ".join(
                f"{r.better} {r.effect:.2f}x the seconds of {r.worse}"
                for r in seconds.head(SHOWN).itertuples()
            )
            if len(seconds)
            else ""
        )
        lead = f" ({intro})" if not sentences else ""
        sentences.append(
            f"**Speed, {_name(factor)}**{lead}: {clauses}{extra}. See {FIGURE['speed']}."
        )
    return sentences


def accuracy_sentences(comparisons: pd.DataFrame, report: ReportParams) -> list[str]:
    """Which levels reach a higher test accuracy; then the other outcomes that differ."""
    sentences = [
        f"**Test accuracy, {_name(factor)}:** {clauses}. See {FIGURE['accuracy']}."
        for factor, clauses in _factor_sentences(
            comparisons, "test_accuracy", report, (DIFFERS, TOO_FEW, UNDECIDED, REVERSES)
        )
    ]
    for outcome in ("best_val_loss", "generalization_gap"):
        found = _factor_sentences(comparisons, outcome, report, (DIFFERS,))
        label = BY_COLUMN[outcome].label
        for factor, clauses in found:
            sentences.append(
                f"**{label.capitalize()}, {_name(factor)}:** {clauses}. See {FIGURE['outcomes']}."
            )
    return sentences


def same_sentences(comparisons: pd.DataFrame, report: ReportParams) -> list[str]:
    """The pairs of levels shown practically the same, each with its stated tolerance."""
    tolerances = report.tolerance.model_dump()
    parts = []
    for outcome in (o.column for o in OUTCOMES if o.kind != "failure"):
        rows = comparisons[(comparisons["outcome"] == outcome) & (comparisons["verdict"] == SAME)]
        if rows.empty:
            continue
        unit = f" {BY_COLUMN[outcome].unit}" if BY_COLUMN[outcome].unit else ""
        within = f"within ±{tolerances[outcome]:g}{unit} of {BY_COLUMN[outcome].label}"
        pairs = ", ".join(f"{r.better} and {r.worse}" for r in rows.itertuples())
        parts.append(f"{within}: {pairs}")
    test = f"two one-sided tests at {report.confidence:.0%}, Holm-corrected"
    if not parts:
        return [
            f"**Practically the same:** no pair of levels is shown the same within the "
            f"tolerances of `params.yaml` (±{tolerances['test_accuracy']:g} points of test "
            f"accuracy, ±{tolerances['epochs_to_target']:g} epochs to target; {test}); "
            f"undecided pairs above say how many seeds would decide them."
        ]
    return [
        f"**Practically the same** ({test}): " + "; ".join(parts) + f". See {FIGURE['accuracy']}, "
        f"{FIGURE['time']}."
    ]


def ties_sentence(table: pd.DataFrame, confidence: float) -> str:
    """Which combinations are not shown worse than the best (table: ties_with_best's)."""
    best, others = table.iloc[0], table.iloc[1:]
    head = f"**Not shown worse than the best** (`{combination_label(best)}`):"
    if others.empty:
        return f"{head} the grid has one combination."
    tested = others[others["tied_with_best"].notna()]
    if tested.empty:
        return (
            f"{head} cannot be tested: the gaps to the best need two or more seeds "
            f"with a test accuracy."
        )
    behind = tested[tested["tied_with_best"].astype(bool) & tested["behind_in_every_seed"]]
    tied = tested[tested["tied_with_best"].astype(bool) & ~tested["behind_in_every_seed"]]
    worse = tested[~tested["tied_with_best"].astype(bool)]
    few = (
        f"; behind the best in every seed, but too few seeds to decide: {_names(behind)}"
        if len(behind)
        else ""
    )
    paired_over = f"paired t-tests over seeds, Holm over {count(len(tested), 'comparison')}"
    if tied.empty:
        if behind.empty:
            return (
                f"{head} none; every other combination is worse at {confidence:.0%} confidence "
                f"({paired_over})."
            )
        named = f"; significantly worse ({paired_over}): {_names(worse)}" if len(worse) else ""
        return f"{head} none{named}{few}."
    text = (
        f"{head} {len(tied)} of {len(others)} other combinations are not significantly worse at "
        f"{confidence:.0%} confidence and not behind it in every seed ({paired_over}; not the "
        "same as equal)"
    )
    if len(tied) <= len(worse):
        return f"{text}: {_names(tied)}{few}."
    named = f"; significantly worse: {_names(worse)}" if len(worse) else ""
    return f"{text}{named}{few}."


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(f"`{combination_label(row)}`" for _, row in rows.iterrows())


def sentences(
    cells: pd.DataFrame, comparisons: pd.DataFrame, ties: pd.DataFrame, report: ReportParams
) -> list[str]:
    """The findings at the top of the report, most important first."""
    shared = [f"{_name(f)} {levels(cells, f)[0]}" for f in FACTORS if f not in varied(cells)]
    return [
        *failure_sentences(cells, comparisons, report),
        *speed_sentences(cells, comparisons, report),
        *accuracy_sentences(comparisons, report),
        *same_sentences(comparisons, report),
        *([f"**Shared by every cell** (not compared): {', '.join(shared)}."] if shared else []),
        ties_sentence(ties, report.confidence),
    ]


def comparisons_display(comparisons: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows = comparisons
    return pd.DataFrame(
        {
            "outcome": rows["outcome"].map(lambda o: BY_COLUMN[o].label),
            "factor": rows["factor"],
            "better": rows["better"].astype(str),
            "worse": rows["worse"].astype(str),
            "pairs for / against / all": [
                f"{b} / {w} / {n}"
                for b, w, n in zip(
                    rows["favour_better"], rows["favour_worse"], rows["pairs"], strict=True
                )
            ],
            "effect": [_amount(row) for _, row in rows.iterrows()],
            f"{confidence:.0%} CI": [_bounds(row) for _, row in rows.iterrows()],
            "Holm p": rows["p_holm"].map(lambda p: p_text(p).lstrip("= ")),
            "same: Holm p": rows["equivalence_p_holm"].map(lambda p: p_text(p).lstrip("= ")),
            "verdict": rows["verdict"],
            "seeds to decide": rows["seeds_needed"].map(
                lambda n: MISSING if math.isnan(n) else str(int(n))
            ),
            "depends on": [
                f"{d} ({b})" if d else ""
                for d, b in zip(rows["depends_on"], rows["by_level"], strict=True)
            ],
        }
    )
