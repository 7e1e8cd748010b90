"""The statistics in plain words: one sentence per factor, one on the ties with the best, tables.

E.g. "Optimizer: adam beats sgd by 0.41 points (95% CI 0.22 to 0.60, Holm p = 0.001, 27 matched
pairs)." A level "beats" another only when Holm's correction leaves it significant at the
report's confidence; otherwise the sentence says no level differs and names the largest gap.
"""

from __future__ import annotations

import math

import pandas as pd

from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.study_comparisons import levels
from stages.lib.reporting.study_format import MISSING, count, interval_of
from stages.lib.reporting.study_table import combination_label

SHOWN = 4  # significant pairs named in a factor's sentence; the table has every one


def p_text(p: float) -> str:
    return MISSING if math.isnan(p) else "< 0.001" if p < 0.001 else f"= {p:.2g}"


def points(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.2f}"


def ci_points(low: float, high: float, confidence: float) -> str:
    return f"{confidence:.0%} CI {interval_of(low, high, points)}"


def factor_sentence(
    factor: str, cells: pd.DataFrame, comparisons: pd.DataFrame, confidence: float
) -> str:
    """The finding for one factor, e.g. "**Optimizer:** adam beats sgd by 0.41 points (...)."."""
    name = f"**{factor.replace('_', ' ').capitalize()}:**"
    present = levels(cells, factor)
    if len(present) == 1:
        return f"{name} shared: {present[0]} (not compared)."
    rows = comparisons[comparisons["factor"] == factor]
    if rows["pairs"].max() < 2:
        return (
            f"{name} at most one matched pair per comparison, so no interval and no test "
            f"(largest gap {_gap(rows)})."
        )
    found = rows[rows["differs"]].sort_values("difference", ascending=False)
    if found.empty:
        return (
            f"{name} no level differs from another at {confidence:.0%} confidence ({_gap(rows)})."
        )
    claims = [
        f"{row.better} beats {row.worse} by {points(row.difference)} points "
        f"({ci_points(row.ci_low, row.ci_high, confidence)}, Holm p {p_text(row.p_holm)}, "
        f"{count(int(row.pairs), 'matched pair')})"
        for row in found.head(SHOWN).itertuples()
    ]
    if len(found) > SHOWN:
        claims.append(f"{len(found) - SHOWN} more pairs differ (table below)")
    rest = rows[~rows["differs"]]
    others = "the other pair does not" if len(rest) == 1 else f"the other {len(rest)} pairs do not"
    tail = f"; {others} differ at {confidence:.0%} confidence ({_gap(rest)})" if len(rest) else ""
    return f"{name} " + "; ".join(claims) + tail + "."


def _gap(rows: pd.DataFrame) -> str:
    """The largest difference among `rows`: "largest gap a vs b 0.08 points, Holm p = 0.4"."""
    top = rows.sort_values("difference", ascending=False).iloc[0]
    return (
        f"largest gap {top['better']} vs {top['worse']} {points(top['difference'])} points, "
        f"Holm p {p_text(top['p_holm'])}"
    )


def ties_sentence(table: pd.DataFrame, confidence: float) -> str:
    """Which combinations are statistically tied with the best (table: ties_with_best's)."""
    best, others = table.iloc[0], table.iloc[1:]
    head = f"**Tied with the best** (`{combination_label(best)}`):"
    if others.empty:
        return f"{head} the grid has one combination."
    tested = others[others["tied_with_best"].notna()]
    if tested.empty:
        return (
            f"{head} cannot be tested: the gaps to the best need two or more seeds "
            f"with a test accuracy."
        )
    tied = tested[tested["tied_with_best"].astype(bool)]
    worse = tested[~tested["tied_with_best"].astype(bool)]
    paired_over = f"paired over seeds, Holm over {count(len(tested), 'comparison')}"
    if tied.empty:
        return (
            f"{head} none; every other combination is worse at {confidence:.0%} confidence "
            f"({paired_over})."
        )
    text = (
        f"{head} {len(tied)} of {len(others)} other combinations are not significantly worse at "
        f"{confidence:.0%} confidence ({paired_over})"
    )
    # Name the shorter list: the tied ones, or the ones significantly worse.
    if len(tied) <= len(worse):
        return f"{text}: {_names(tied)}."
    return f"{text}; significantly worse: {_names(worse)}." if len(worse) else f"{text}."


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(f"`{combination_label(row)}`" for _, row in rows.iterrows())


def sentences(
    cells: pd.DataFrame, comparisons: pd.DataFrame, ties: pd.DataFrame, confidence: float
) -> list[str]:
    """The findings at the top of the report: one per factor that varies, one naming the shared
    ones, then the ties with the best."""
    varied = [factor for factor in FACTORS if len(levels(cells, factor)) > 1]
    shared = [
        f"{factor.replace('_', ' ')} {levels(cells, factor)[0]}"
        for factor in FACTORS
        if factor not in varied
    ]
    return [
        *(factor_sentence(factor, cells, comparisons, confidence) for factor in varied),
        *([f"**Shared by every cell** (not compared): {', '.join(shared)}."] if shared else []),
        ties_sentence(ties, confidence),
    ]


def comparisons_display(comparisons: pd.DataFrame, confidence: float) -> pd.DataFrame:
    rows = comparisons
    return pd.DataFrame(
        {
            "factor": rows["factor"],
            "better": rows["better"].astype(str),
            "worse": rows["worse"].astype(str),
            "matched pairs": rows["pairs"].astype(int).astype(str),
            "difference (points)": rows["difference"].map(points),
            f"{confidence:.0%} CI": [
                interval_of(low, high, points)
                for low, high in zip(rows["ci_low"], rows["ci_high"], strict=True)
            ],
            "p": rows["p"].map(lambda p: p_text(p).lstrip("= ")),
            "Holm p": rows["p_holm"].map(lambda p: p_text(p).lstrip("= ")),
            "differs": [
                MISSING if math.isnan(p) else "yes" if differs else "no"
                for p, differs in zip(rows["p_holm"], rows["differs"], strict=True)
            ],
        }
    )
