"""Which differences are real: every pair of levels of every factor, on every outcome.

Matched blocks (Demšar 2006): for levels A and B of factor F, each cell with F=A is paired with the
cell with F=B that has the same other factors and seed. Per outcome (OUTCOMES):

- measures (test accuracy, best validation loss, generalization gap): the Wilcoxon signed-rank
  test of the matched differences; effect size: their mean with a Student-t interval;
- times to the target (epochs, seconds), which a cell that never reaches the target leaves
  censored: an exact sign test with Gehan's scoring of each pair, where a run that ended short of
  the target (stopped early, or at the epoch limit that every cell shares) counts as never
  reaching it, as in AlgoPerf: A is faster when it reached the target and B did later or never; a
  pair where neither reached it, or both at the same epoch, is undecided; effect size: the
  geometric mean ratio of the times over the pairs where both reached it, with a t interval on
  the log ratios;
- failure to train: the same exact sign test on the pairs where exactly one side failed
  (McNemar's exact test); effect size: the difference of failure rates, with a t interval.

Holm's correction runs within each outcome and factor. A pair of levels then gets one verdict:
`differs` (Holm p below 1 - confidence); `same` (the two one-sided tests, TOST, put the mean
difference within ± the outcome's tolerance from params.yaml `report.tolerance`, Holm-corrected);
`too few` (every decided pair goes one way, but there are too few pairs for the test to decide);
`undecided` (neither); `reverses` (not shown different overall, and the effect changes sign
across the levels of another factor it depends on: no pooled answer, the levels are reported).
`too few` and `undecided` carry the seeds that would decide it, from the observed spread
(stats.pairs_to_detect and friends). "No difference" is never a verdict.

Does an effect depend on another factor? For each varied factor G besides F, the matched
differences of A and B are grouped by G's level and a one-way ANOVA tests whether their mean is the
same in every group (seeds and the remaining factors as replicates), Holm over every G of the
factor and outcome. A dependent effect is reported level by level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations as pairs_of

import numpy as np
import pandas as pd

from stages.lib.core.config import ReportParams
from stages.lib.reporting.cell_results import FACTORS
from stages.lib.reporting.stats import (
    equivalence,
    estimate,
    heterogeneity,
    holm,
    paired,
    pairs_for_sign_test,
    pairs_to_detect,
    pairs_to_show_equivalence,
    sign_test,
    signed_rank,
)

POINTS = 100.0  # accuracy (a fraction) to percentage points

DIFFERS, SAME, TOO_FEW, UNDECIDED, REVERSES, NEITHER_FAILS, UNTESTABLE = (
    "differs",
    "same",
    "too few",
    "undecided",
    "reverses",
    "neither fails",
    "untestable",
)


@dataclass(frozen=True)
class Outcome:
    """One outcome of a cell: its cells-table column and how levels are compared on it."""

    column: str
    label: str
    unit: str  # of differences: "points", "epochs", "s" or "" (a loss)
    scale: float  # cells-table value -> unit
    higher_is_better: bool
    kind: str  # "measure", "time" (censored: NaN when never reached) or "failure"
    digits: int = 2


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("failed_to_train", "failure to train", "points", POINTS, False, "failure"),
    Outcome("epochs_to_target", "epochs to target", "epochs", 1.0, False, "time", digits=1),
    Outcome("seconds_to_target", "seconds to target", "s", 1.0, False, "time", digits=1),
    Outcome("test_accuracy", "test accuracy", "points", POINTS, True, "measure"),
    Outcome("best_val_loss", "best validation loss", "", 1.0, False, "measure", digits=3),
    Outcome("generalization_gap", "generalization gap", "points", 1.0, False, "measure"),
)
BY_COLUMN = {outcome.column: outcome for outcome in OUTCOMES}

COMPARISON_COLUMNS: tuple[str, ...] = (
    "outcome",
    "factor",
    "better",
    "worse",
    "pairs",
    "favour_better",
    "favour_worse",
    "effect",  # measures and failure: mean difference in `unit`; times: ratio better / worse
    "ci_low",
    "ci_high",
    "effect_min",  # the smallest and largest matched difference in the better level's favour
    "effect_max",
    "p",
    "p_holm",
    "equivalence_p",
    "equivalence_p_holm",
    "verdict",
    "seeds_needed",  # that would decide a `too few` or `undecided` pair (NaN: none likely would)
    "depends_on",  # the other factor the effect depends on most clearly ("" when none)
    "dependence_p_holm",
    "by_level",  # the effect per level of `depends_on`: "normal_tiny: 86.9; glorot_uniform: 12.1"
)


def levels(cells: pd.DataFrame, factor: str) -> list:
    """The levels of `factor` present in the cells, in grid order."""
    return list(dict.fromkeys(cells[factor]))


def varied(cells: pd.DataFrame) -> list[str]:
    return [factor for factor in FACTORS if len(levels(cells, factor)) > 1]


@dataclass(frozen=True)
class _Pair:
    """The matched cells of two levels: one row per block, `a_*` and `b_*` columns."""

    frame: pd.DataFrame

    @classmethod
    def of(cls, cells: pd.DataFrame, factor: str, a: object, b: object) -> _Pair:
        blocks = [f for f in FACTORS if f != factor] + ["seed"]
        left = cells[cells[factor] == a].set_index(blocks)
        right = cells[cells[factor] == b].set_index(blocks)
        joined = left.merge(
            right, how="inner", left_index=True, right_index=True, suffixes=("_a", "_b")
        )
        return cls(joined.reset_index())


def _differences(pair: _Pair, outcome: Outcome) -> np.ndarray:
    """Matched differences a - b, in the outcome's unit, oriented so positive favours a."""
    a = pair.frame[f"{outcome.column}_a"].astype(float).to_numpy()
    b = pair.frame[f"{outcome.column}_b"].astype(float).to_numpy()
    sign = 1.0 if outcome.higher_is_better else -1.0
    return sign * (a - b) * outcome.scale + 0.0  # + 0.0: no -0.0 where the sides are equal


def _gehan(pair: _Pair, outcome: Outcome) -> np.ndarray:
    """Per block: +1 when a reached the target first, -1 when b did, 0 when tied or when
    neither reached it."""
    f = pair.frame  # a run that ended short of the target never reaches it (module doc)
    ta, tb = f[f"{outcome.column}_a"].astype(float), f[f"{outcome.column}_b"].astype(float)
    a_first = ta.notna() & (tb.isna() | (ta < tb))
    b_first = tb.notna() & (ta.isna() | (tb < ta))
    return np.where(a_first, 1, np.where(b_first, -1, 0))


def _log_ratios(pair: _Pair, outcome: Outcome) -> np.ndarray:
    """log(time of a / time of b) over the blocks where both reached the target (NaN else)."""
    f = pair.frame
    ta = f[f"{outcome.column}_a"].astype(float).to_numpy()
    tb = f[f"{outcome.column}_b"].astype(float).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.log(np.where((ta > 0) & (tb > 0), ta / tb, np.nan))
    return ratios


def _scores(pair: _Pair, outcome: Outcome) -> np.ndarray:
    """Per block, what the dependence test compares: the matched difference (measures, failure)
    or the log time ratio, sign-flipped so positive favours a."""
    if outcome.kind == "time":
        return -_log_ratios(pair, outcome)
    return _differences(pair, outcome)


def _compare(pair: _Pair, outcome: Outcome, confidence: float) -> dict:
    """The test, effect size and equivalence of a against b (not yet oriented)."""
    differences = _differences(pair, outcome)  # positive favours a
    if outcome.kind == "time":
        votes = _gehan(pair, outcome)
        wins, losses = int((votes > 0).sum()), int((votes < 0).sum())
        ratio = estimate(_log_ratios(pair, outcome), confidence)
        censored = bool(np.isnan(differences).any())
        return {
            "wins": wins,
            "losses": losses,
            "p": sign_test(wins, losses),
            "effect": math.exp(ratio.mean) if ratio.n else math.nan,
            "ci_low": math.exp(ratio.ci_low) if ratio.n > 1 else math.nan,
            "ci_high": math.exp(ratio.ci_high) if ratio.n > 1 else math.nan,
            "spread": differences,
            "equivalence_values": None if censored else differences,
            "kind": "ratio",
        }
    finite = differences[np.isfinite(differences)]
    result = paired(finite, np.zeros_like(finite), confidence)
    if outcome.kind == "failure":  # +100 points where only b failed, -100 where only a did
        wins, losses = int((finite > 0).sum()), int((finite < 0).sum())
        failures = pair.frame[[f"{outcome.column}_a", f"{outcome.column}_b"]].astype(float)
        return {
            "wins": wins,
            "losses": losses,
            "p": sign_test(wins, losses),
            "effect": result.mean,
            "ci_low": result.ci_low,
            "ci_high": result.ci_high,
            "spread": differences,
            "equivalence_values": None,
            "kind": "difference",
            "none_failed": not np.nansum(failures.to_numpy()),
        }
    return {
        "wins": int((finite > 0).sum()),
        "losses": int((finite < 0).sum()),
        "p": signed_rank(finite),
        "effect": result.mean,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "spread": finite,
        "equivalence_values": finite,
        "kind": "difference",
    }


def strength(outcome: str, effect: float) -> float:
    """How large an effect is, to name the largest first: |log ratio| for times, else |effect|
    (0 when undefined)."""
    if not math.isfinite(effect):
        return 0.0
    return (
        abs(math.log(effect)) if BY_COLUMN[outcome].kind == "time" and effect > 0 else abs(effect)
    )


def _orient(found: dict, a: object, b: object) -> dict:
    """The better level first: flip a comparison whose effect favours b."""
    if found["kind"] == "ratio":
        favours_b = found["losses"] > found["wins"] or (
            found["losses"] == found["wins"] and found["effect"] > 1.0
        )
    else:
        favours_b = found["effect"] < 0 or (
            found["effect"] == 0 and found["losses"] > found["wins"]
        )
    if not favours_b:
        return {**found, "better": a, "worse": b}
    flipped = dict(found, better=b, worse=a, wins=found["losses"], losses=found["wins"])
    flipped["spread"] = -found["spread"]
    if found["kind"] == "ratio":
        flipped["effect"] = 1.0 / found["effect"] if found["effect"] else math.nan
        flipped["ci_low"], flipped["ci_high"] = (
            1.0 / found["ci_high"] if found["ci_high"] else math.nan,
            1.0 / found["ci_low"] if found["ci_low"] else math.nan,
        )
    else:
        flipped["effect"] = -found["effect"]
        flipped["ci_low"], flipped["ci_high"] = -found["ci_high"], -found["ci_low"]
    return flipped


def factor_comparisons(cells: pd.DataFrame, report: ReportParams) -> pd.DataFrame:
    """One row per outcome, factor with two or more levels and pair of its levels
    (COMPARISON_COLUMNS). Outcomes absent from `cells` are skipped."""
    confidence = report.confidence
    alpha = 1.0 - confidence
    seeds = max(1, cells["seed"].nunique())
    tolerances = report.tolerance.model_dump()
    rows: list[dict] = []
    for outcome in OUTCOMES:
        if outcome.column not in cells:
            continue
        for factor in varied(cells):
            family = []
            for a, b in pairs_of(levels(cells, factor), 2):
                pair = _Pair.of(cells, factor, a, b)
                found = _orient(_compare(pair, outcome, confidence), a, b)
                found["pair"] = pair if found["better"] == a else _Pair(_swap(pair.frame))
                family.append(found)
            adjusted = holm([f["p"] for f in family])
            tolerance = tolerances.get(outcome.column, math.nan)
            equivalences = [
                equivalence(f["equivalence_values"], tolerance)
                if f["equivalence_values"] is not None
                else math.nan
                for f in family
            ]
            equivalences_holm = holm(equivalences)
            dependence = _dependence(cells, factor, outcome, family, alpha)
            for found, p_holm, eq, eq_holm, depends in zip(
                family, adjusted, equivalences, equivalences_holm, dependence, strict=True
            ):
                pairs = len(found["pair"].frame)
                verdict = _verdict(found, p_holm, eq_holm, alpha)
                if depends.pop("reverses") and verdict in (SAME, TOO_FEW, UNDECIDED):
                    verdict = REVERSES  # a pooled answer would hide opposite effects
                needed = (
                    _seeds_needed(
                        found, outcome, tolerance, alpha / max(1, len(family)), pairs, seeds
                    )
                    if verdict in (TOO_FEW, UNDECIDED)
                    else math.nan
                )
                spread = np.asarray(found["spread"], dtype=float)
                spread = spread[np.isfinite(spread)]
                rows.append(
                    {
                        "outcome": outcome.column,
                        "factor": factor,
                        "better": found["better"],
                        "worse": found["worse"],
                        "pairs": pairs,
                        "favour_better": found["wins"],
                        "favour_worse": found["losses"],
                        "effect": found["effect"],
                        "ci_low": found["ci_low"],
                        "ci_high": found["ci_high"],
                        "effect_min": float(spread.min()) if len(spread) else math.nan,
                        "effect_max": float(spread.max()) if len(spread) else math.nan,
                        "p": found["p"],
                        "p_holm": p_holm,
                        "equivalence_p": eq,
                        "equivalence_p_holm": eq_holm,
                        "verdict": verdict,
                        "seeds_needed": needed,
                        **depends,
                    }
                )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def _swap(frame: pd.DataFrame) -> pd.DataFrame:
    """The matched frame with its a and b sides exchanged."""
    renamed = {}
    for column in frame.columns:
        if column.endswith("_a"):
            renamed[column] = column[:-2] + "_b"
        elif column.endswith("_b"):
            renamed[column] = column[:-2] + "_a"
    return frame.rename(columns=renamed)


def _verdict(found: dict, p_holm: float, equivalence_holm: float, alpha: float) -> str:
    if found.get("none_failed"):
        return NEITHER_FAILS
    if math.isnan(p_holm) and found["wins"] + found["losses"] == 0 and math.isnan(equivalence_holm):
        return UNTESTABLE if not len(found["pair"].frame) else UNDECIDED
    if p_holm < alpha:
        return DIFFERS
    if equivalence_holm < alpha:
        return SAME
    if found["wins"] > 0 and found["losses"] == 0:
        return TOO_FEW
    return UNDECIDED


def _seeds_needed(
    found: dict, outcome: Outcome, tolerance: float, alpha: float, pairs: int, seeds: int
) -> float:
    """Seeds (the grid's other factors unchanged) that would likely decide the question."""
    if pairs == 0:
        return math.nan
    per_seed = pairs / seeds
    if outcome.kind == "measure":
        values = np.asarray(found["spread"], dtype=float)
        values = values[np.isfinite(values)]
        if len(values) < 2:
            mean, std = (float(values[0]) if len(values) else math.nan), 0.0
        else:
            mean, std = float(values.mean()), float(values.std(ddof=1))
        needed = min(
            pairs_to_detect(mean, std, alpha),
            pairs_to_show_equivalence(mean, std, tolerance, alpha),
        )
    else:
        decided = found["wins"] + found["losses"]
        share = found["wins"] / decided if decided else math.nan
        needed = pairs_for_sign_test(share, alpha) * (pairs / decided if decided else math.nan)
    if not math.isfinite(needed):
        return math.nan
    return float(max(seeds + 1, math.ceil(needed / per_seed)))


def _dependence(
    cells: pd.DataFrame, factor: str, outcome: Outcome, family: Sequence[dict], alpha: float
) -> list[dict]:
    """Per comparison of `family`: the other factor its effect depends on most clearly (Holm
    over every comparison and other factor of the family, significant at `alpha`) and the
    effect at each of its levels; empty where it depends on none."""
    others = [g for g in varied(cells) if g != factor]
    tests = []  # (index in family, other factor, p)
    for index, found in enumerate(family):
        scores = _scores(found["pair"], outcome)
        for other in others:
            column = found["pair"].frame[other]
            groups = [scores[(column == level).to_numpy()] for level in levels(cells, other)]
            tests.append((index, other, heterogeneity(groups)))
    adjusted = holm([p for _, _, p in tests])
    results = [
        {"depends_on": "", "dependence_p_holm": math.nan, "by_level": "", "reverses": False}
        for _ in family
    ]
    best: dict[int, float] = {}
    for (index, other, _), p_holm in zip(tests, adjusted, strict=True):
        if not p_holm < alpha:
            continue
        if index not in best or p_holm < best[index]:
            best[index] = p_holm
            means = _level_means(cells, family[index], outcome, other)
            results[index] = {
                "depends_on": other,
                "dependence_p_holm": p_holm,
                "by_level": _by_level(means, outcome),
                "reverses": _reverses(means),
            }
    return results


def _level_means(
    cells: pd.DataFrame, found: dict, outcome: Outcome, other: str
) -> dict[object, float]:
    """The mean score (see _scores) of better over worse at each level of `other`; NaN where
    no block of that level has one."""
    frame, scores = found["pair"].frame, _scores(found["pair"], outcome)
    means = {}
    for level in levels(cells, other):
        values = scores[(frame[other] == level).to_numpy()]
        values = values[np.isfinite(values)]
        means[level] = float(values.mean()) if len(values) else math.nan
    return means


def _reverses(means: dict[object, float]) -> bool:
    """Whether the effect changes sign across the levels (NaN levels left out)."""
    known = [mean for mean in means.values() if math.isfinite(mean)]
    return bool(known) and max(known) > 0 > min(known)


def _by_level(means: dict[object, float], outcome: Outcome) -> str:
    """The effect of better over worse at each level, e.g. "tiny: 86.9; he: 12.1"."""
    parts = []
    for level, mean in means.items():
        if not math.isfinite(mean):
            parts.append(f"{level}: {'not both reached' if outcome.kind == 'time' else '—'}")
        elif outcome.kind == "time":
            parts.append(f"{level}: {math.exp(-mean):.2f}x")
        else:
            parts.append(f"{level}: {mean:.{outcome.digits}f}")
    return "; ".join(parts)


def ties_with_best(
    cells: pd.DataFrame, combinations: pd.DataFrame, confidence: float
) -> pd.DataFrame:
    """`combinations` (ranked, best first) with the gap to the best and whether it is tied.

    Added columns: gap_to_best (points, best minus this, paired over seeds), gap_ci_low,
    gap_ci_high, gap_p (two-sided paired t-test), gap_p_holm and tied_with_best (True for the
    best itself; NaN when the gap cannot be tested, e.g. with one seed) and behind_in_every_seed
    (every seed below the best's same seed). Tied means "not shown worse", never "the same": the
    best was picked for being best, and seeds are few; one behind in every seed is reported as
    too few seeds to decide, not as tied.
    """
    by_seed = cells.set_index([*FACTORS, "seed"])["test_accuracy"].sort_index()
    best = tuple(combinations.iloc[0][list(FACTORS)])
    best_values = by_seed.loc[best]
    found, behind = [], [False]
    for _, row in combinations.iloc[1:].iterrows():
        other = by_seed.loc[tuple(row[list(FACTORS)])].reindex(best_values.index)
        found.append(paired(best_values.to_numpy(), other.to_numpy(), confidence))
        gaps = (best_values - other).to_numpy(dtype=float)
        gaps = gaps[np.isfinite(gaps)]
        behind.append(bool(len(gaps)) and bool((gaps > 0).all()))
    adjusted = holm([result.p for result in found])
    table = combinations.copy()
    table["gap_to_best"] = [0.0] + [r.mean * POINTS for r in found]
    table["gap_ci_low"] = [math.nan] + [r.ci_low * POINTS for r in found]
    table["gap_ci_high"] = [math.nan] + [r.ci_high * POINTS for r in found]
    table["gap_p"] = [math.nan] + [r.p for r in found]
    table["gap_p_holm"] = [math.nan, *adjusted]
    tied = [True] + [math.nan if math.isnan(p) else not p < 1.0 - confidence for p in adjusted]
    table["tied_with_best"] = pd.Series(tied, index=table.index, dtype=object)
    # Not shown worse, yet behind the best in every seed: too few seeds, never "tied".
    table["behind_in_every_seed"] = behind
    return table


HEADLINE_OUTCOMES = ("test_accuracy", "epochs_to_target")


def metrics(comparisons: pd.DataFrame, ties: pd.DataFrame) -> dict:
    """summary.json's part, kept short so `dvc exp show` compares studies at a glance: per
    headline outcome and factor, the clearest effect (a `differs` pair first, then the largest);
    the number of combinations tied with the best. Nested dicts only, numbers where possible."""

    def number(value: float) -> float | None:
        return float(value) if math.isfinite(value) else None

    rank = {DIFFERS: 0, TOO_FEW: 1, UNDECIDED: 2, SAME: 3}
    effects: dict[str, dict] = {}
    for outcome in HEADLINE_OUTCOMES:
        rows = comparisons[comparisons["outcome"] == outcome]
        for factor, group in rows.groupby("factor", sort=False):
            order = group.assign(
                _rank=group["verdict"].map(lambda v: rank.get(v, 4)),
                _strength=[-strength(outcome, effect) for effect in group["effect"]],
            ).sort_values(["_rank", "_strength"])
            top = order.iloc[0]
            effects.setdefault(outcome, {})[str(factor)] = {
                "pair": f"{top['better']}_vs_{top['worse']}",
                "effect": number(float(top["effect"])),
                "p_holm": number(float(top["p_holm"])),
                "differs": top["verdict"] == DIFFERS,
            }
    tested = ties["tied_with_best"].iloc[1:].dropna()
    return {
        "effects": effects,
        "tied_with_best": int(tested.astype(bool).sum()) if len(tested) else None,
    }
