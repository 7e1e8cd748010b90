"""Which differences are real: paired comparisons, Holm and ties on small tables with known answers.

The expected numbers come from scipy directly (ttest_rel on the matched vectors built by hand here)
and from Holm's rule written out, so the report's own pairing and correction are what is tested.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stages.lib.reporting.study_comparisons import factor_comparisons, metrics, ties_with_best
from stages.lib.reporting.study_findings import factor_sentence, sentences, ties_sentence
from stages.lib.reporting.study_table import combinations_table

ACTIVATIONS = {"relu": 0.980, "tanh": 0.979, "sigmoid": 0.970}
OPTIMIZERS = {"sgd": 0.0, "adam": 0.002}
SEEDS = (0, 1, 2, 3)
NOISE = np.random.default_rng(7).normal(0.0, 0.0015, size=(3, 2, 4))


def cells_table() -> pd.DataFrame:
    """3 activations x 1 initializer (shared) x 2 optimizers x 4 seeds, noisy accuracies."""
    rows = []
    for (i, a), (j, o), (k, seed) in itertools.product(
        enumerate(ACTIVATIONS), enumerate(OPTIMIZERS), enumerate(SEEDS)
    ):
        accuracy = ACTIVATIONS[a] + OPTIMIZERS[o] + NOISE[i, j, k]
        rows.append(
            {
                "activation": a,
                "initializer": "he_normal",
                "optimizer": o,
                "architecture": "base",
                "batch_size": 256,
                "dropout": 0.0,
                "seed": seed,
                "key": f"{a}-he_normal-{o}-base-256-0.0-{seed}",
                "test_accuracy": accuracy,
                "best_val_accuracy": accuracy,
                "best_epoch": 5,
                "train_seconds": 10.0,
                **{f"digit_{d}": accuracy for d in range(10)},
            }
        )
    return pd.DataFrame(rows)


def accuracy(cells: pd.DataFrame, **where: object) -> np.ndarray:
    """The test accuracies of the cells matching `where`, ordered by the other factors and seed."""
    mask = np.logical_and.reduce([cells[k] == v for k, v in where.items()])
    chosen = cells[mask].sort_values(["activation", "initializer", "optimizer", "seed"])
    return chosen["test_accuracy"].to_numpy()


def test_levels_are_compared_over_matched_cells_with_holm_within_the_factor() -> None:
    cells = cells_table()
    table = factor_comparisons(cells, 0.95)
    assert set(table["factor"]) == {"activation", "optimizer"}  # the initializer is shared

    # Activation: 3 pairs, each over 2 optimizers x 4 seeds = 8 matched cells.
    activation = table[table["factor"] == "activation"].set_index(["better", "worse"])
    p_values = {}
    for a, b in itertools.combinations(ACTIVATIONS, 2):
        x, y = accuracy(cells, activation=a), accuracy(cells, activation=b)
        expected = stats.ttest_rel(x, y)
        better, worse = (a, b) if (x - y).mean() > 0 else (b, a)
        row = activation.loc[(better, worse)]
        assert row["pairs"] == 8
        assert row["difference"] == pytest.approx(abs((x - y).mean()) * 100)
        assert row["p"] == pytest.approx(expected.pvalue)
        low, high = expected.confidence_interval(0.95)
        sign = 1 if better == a else -1
        assert sorted([row["ci_low"], row["ci_high"]]) == pytest.approx(
            sorted([sign * low * 100, sign * high * 100])
        )
        p_values[(better, worse)] = expected.pvalue
    # Holm written out: sorted p times (3, 2, 1), running maximum, capped at 1.
    ordered = sorted(p_values, key=p_values.get)
    running = 0.0
    for factor, pair in zip((3, 2, 1), ordered, strict=True):
        running = max(running, min(1.0, factor * p_values[pair]))
        assert activation.loc[pair, "p_holm"] == pytest.approx(running)
        assert activation.loc[pair, "differs"] == (running < 0.05)
    # relu and tanh are 0.1 points apart, sigmoid a full point below: only sigmoid differs.
    assert activation.loc[("relu", "sigmoid"), "differs"]
    assert activation.loc[("tanh", "sigmoid"), "differs"]

    optimizer = table[table["factor"] == "optimizer"].iloc[0]
    x, y = accuracy(cells, optimizer="adam"), accuracy(cells, optimizer="sgd")
    assert (optimizer["better"], optimizer["worse"], optimizer["pairs"]) == ("adam", "sgd", 12)
    assert optimizer["p_holm"] == pytest.approx(stats.ttest_rel(x, y).pvalue)  # one pair: no change


def test_sentences_say_the_finding_in_plain_words() -> None:
    cells = cells_table()
    table = factor_comparisons(cells, 0.95)
    activation = factor_sentence("activation", cells, table, 0.95)
    assert activation.startswith("**Activation:** relu beats sigmoid by ")
    assert "tanh beats sigmoid" in activation and "Holm p" in activation
    assert "8 matched pairs" in activation
    assert factor_sentence("initializer", cells, table, 0.95) == (
        "**Initializer:** shared: he_normal (not compared)."
    )
    # relu and tanh alone (0.1 points apart in truth): no difference, the largest gap is named.
    close = cells[cells["activation"] != "sigmoid"]
    table = factor_comparisons(close, 0.95)
    assert factor_sentence("activation", close, table, 0.95).startswith(
        "**Activation:** no level differs from another at 95% confidence (largest gap relu vs "
        "tanh 0.09 points, Holm p = 0.056)"
    )


def test_ties_with_the_best_are_paired_over_seeds() -> None:
    cells = cells_table()
    ranked = ties_with_best(cells, combinations_table(cells, 0.95), 0.95)
    best = ranked.iloc[0]
    assert best["tied_with_best"] is True and best["gap_to_best"] == 0.0
    best_values = accuracy(cells, activation=best["activation"], optimizer=best["optimizer"])
    p_values = []
    for _, row in ranked.iloc[1:].iterrows():
        other = accuracy(cells, activation=row["activation"], optimizer=row["optimizer"])
        expected = stats.ttest_rel(best_values, other)
        assert row["gap_p"] == pytest.approx(expected.pvalue)
        assert row["gap_to_best"] == pytest.approx((best_values - other).mean() * 100)
        p_values.append(expected.pvalue)
    m = len(p_values)
    order = np.argsort(p_values)
    holm = np.minimum(np.maximum.accumulate((m - np.arange(m)) * np.sort(p_values)), 1.0)
    assert ranked["gap_p_holm"].iloc[1:].to_numpy()[order] == pytest.approx(holm)
    assert ranked["tied_with_best"].iloc[1:].tolist() == [
        p >= 0.05 for p in ranked["gap_p_holm"][1:]
    ]
    # Every sigmoid combination is a full point below: none is tied.
    assert not ranked[ranked["activation"] == "sigmoid"]["tied_with_best"].any()
    text = ties_sentence(ranked, 0.95)
    assert text.startswith(f"**Tied with the best** (`{best['activation']} / {best['optimizer']}`)")
    summary = metrics(factor_comparisons(cells, 0.95), ranked)
    assert summary["tied_with_best"] == int(ranked["tied_with_best"].iloc[1:].sum())
    assert summary["comparisons"]["optimizer"]["adam_vs_sgd"]["pairs"] == 12


def test_one_seed_and_nan_accuracies() -> None:
    cells = cells_table()
    one_seed = cells[cells["seed"] == 0].reset_index(drop=True)
    ranked = ties_with_best(one_seed, combinations_table(one_seed, 0.95), 0.95)
    assert ranked["tied_with_best"].iloc[1:].isna().all()  # one seed: not testable
    assert "cannot be tested" in ties_sentence(ranked, 0.95)
    # Levels are still compared over the other factors (3 activations x 1 seed per optimizer).
    table = factor_comparisons(one_seed, 0.95)
    assert table[table["factor"] == "optimizer"]["pairs"].tolist() == [3]

    # A NaN accuracy drops its pairs, and only those.
    holed = cells.copy()
    holed.loc[(holed["key"] == "relu-he_normal-adam-base-256-0.0-2"), "test_accuracy"] = math.nan
    table = factor_comparisons(holed, 0.95)
    optimizer = table[table["factor"] == "optimizer"].iloc[0]
    assert optimizer["pairs"] == 11 and math.isfinite(optimizer["p"])
    found = sentences(
        holed, table, ties_with_best(holed, combinations_table(holed, 0.95), 0.95), 0.95
    )
    assert (
        len(found) == 4
        and found[2].startswith("**Shared by every cell**")
        and not any("nan" in sentence for sentence in found)
    )


def test_a_single_matched_pair_has_no_interval() -> None:
    cells = cells_table()
    tiny = cells[(cells["seed"] == 0) & (cells["activation"] == "relu")].reset_index(drop=True)
    table = factor_comparisons(tiny, 0.95)
    row = table.iloc[0]
    assert row["pairs"] == 1 and math.isnan(row["ci_low"]) and math.isnan(row["p_holm"])
    assert not row["differs"]
    assert "no interval and no test" in factor_sentence("optimizer", tiny, table, 0.95)
    assert factor_sentence("activation", tiny, table, 0.95).endswith("shared: relu (not compared).")


def test_a_factor_without_any_number_says_so() -> None:
    cells = cells_table()
    cells["test_accuracy"] = math.nan
    table = factor_comparisons(cells, 0.95)
    assert table["pairs"].eq(0).all() and not table["differs"].any()
    sentence = factor_sentence("optimizer", cells, table, 0.95)
    assert "no interval and no test" in sentence and "nan" not in sentence
