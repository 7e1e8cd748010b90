"""Which differences are real: paired comparisons of levels, and the ties with the best combination.

- Levels of a factor: for levels A and B of factor F, each cell with F=A is paired with the cell
  with F=B that has the same other factors and seed; a paired t-test on the differences of test
  accuracy gives the mean difference with its t interval and a p-value. Holm's correction runs
  over the pairwise comparisons within the factor. A factor whose cells all share one level is not
  compared (it has no rows here).
- Tied with the best: every combination against the best one (rank 1), paired over seeds, Holm
  over those comparisons; tied = not significantly different at the report's confidence (the best
  was picked for being best, so this errs towards calling combinations tied).

Differences are in percentage points of test accuracy, the better level first (never negative);
intervals are per comparison (not adjusted), decisions use the Holm-adjusted p.
"""

from __future__ import annotations

import math
from itertools import combinations as pairs_of

import pandas as pd

from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.stats import holm, paired

POINTS = 100.0  # accuracy (a fraction) to percentage points
COMPARISON_COLUMNS: tuple[str, ...] = (
    "factor",
    "better",
    "worse",
    "pairs",
    "difference",
    "ci_low",
    "ci_high",
    "t",
    "p",
    "p_holm",
    "differs",
)


def levels(cells: pd.DataFrame, factor: str) -> list:
    """The levels of `factor` present in the cells, in grid order."""
    return list(dict.fromkeys(cells[factor]))


def factor_comparisons(cells: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """One row per pair of levels of every factor with two or more levels (COMPARISON_COLUMNS)."""
    rows: list[dict] = []
    for factor in FACTORS:
        present = levels(cells, factor)
        if len(present) < 2:
            continue
        others = [f for f in FACTORS if f != factor] + ["seed"]
        matched = cells.set_index([*others, factor])["test_accuracy"].unstack(factor)
        found = []
        for a, b in pairs_of(present, 2):
            result = paired(matched[a].to_numpy(), matched[b].to_numpy(), confidence)
            if result.mean < 0:  # the better level first
                a, b = b, a
                low, high, t = -result.ci_high, -result.ci_low, -result.t
            else:
                low, high, t = result.ci_low, result.ci_high, result.t
            found.append(
                {
                    "factor": factor,
                    "better": a,
                    "worse": b,
                    "pairs": result.n,
                    "difference": abs(result.mean) * POINTS,
                    "ci_low": low * POINTS,
                    "ci_high": high * POINTS,
                    "t": t,
                    "p": result.p,
                }
            )
        adjusted = holm([row["p"] for row in found])
        for row, p_holm in zip(found, adjusted, strict=True):
            rows.append({**row, "p_holm": p_holm, "differs": _differs(p_holm, confidence)})
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def ties_with_best(
    cells: pd.DataFrame, combinations: pd.DataFrame, confidence: float
) -> pd.DataFrame:
    """`combinations` (ranked, best first) with the gap to the best and whether it is tied.

    Added columns: gap_to_best (points, best minus this, paired over seeds), gap_ci_low,
    gap_ci_high, gap_p (two-sided), gap_p_holm and tied_with_best (True for the best itself;
    NaN when the gap cannot be tested, e.g. with one seed).
    """
    by_seed = cells.set_index([*FACTORS, "seed"])["test_accuracy"].sort_index()
    best = tuple(combinations.iloc[0][list(FACTORS)])
    best_values = by_seed.loc[best]
    found = []
    for _, row in combinations.iloc[1:].iterrows():
        other = by_seed.loc[tuple(row[list(FACTORS)])].reindex(best_values.index)
        found.append(paired(best_values.to_numpy(), other.to_numpy(), confidence))
    adjusted = holm([result.p for result in found])
    table = combinations.copy()
    table["gap_to_best"] = [0.0] + [r.mean * POINTS for r in found]
    table["gap_ci_low"] = [math.nan] + [r.ci_low * POINTS for r in found]
    table["gap_ci_high"] = [math.nan] + [r.ci_high * POINTS for r in found]
    table["gap_p"] = [math.nan] + [r.p for r in found]
    table["gap_p_holm"] = [math.nan, *adjusted]
    tied = [True] + [math.nan if math.isnan(p) else not _differs(p, confidence) for p in adjusted]
    table["tied_with_best"] = pd.Series(tied, index=table.index, dtype=object)
    return table


def _differs(p_holm: float, confidence: float) -> bool:
    """Significant at `confidence` after Holm; an untestable comparison (NaN) is not."""
    return bool(p_holm < 1.0 - confidence)


def metrics(comparisons: pd.DataFrame, ties: pd.DataFrame) -> dict:
    """summary.json's part: per factor and pair, the difference, interval, Holm p and decision;
    the number of combinations tied with the best. Nested dicts only, so `dvc metrics` shows it."""

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    pairs: dict[str, dict] = {}
    for row in comparisons.itertuples():
        pairs.setdefault(str(row.factor), {})[f"{row.better}_vs_{row.worse}"] = {
            "difference_points": number(row.difference),
            "ci_low": number(row.ci_low),
            "ci_high": number(row.ci_high),
            "p_holm": number(row.p_holm),
            "pairs": int(row.pairs),
            "differs": bool(row.differs),
        }
    tested = ties["tied_with_best"].iloc[1:].dropna()
    return {
        "comparisons": pairs,
        "tied_with_best": int(tested.astype(bool).sum()) if len(tested) else None,
    }
