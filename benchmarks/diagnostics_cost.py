"""How much the per-epoch diagnostics add to a cell's training time (target: ratio <= 1.10).

Trains the project's default-size model (hidden units, batch size, steps per execution and probe
size from params.yaml) on synthetic digits, with and without `DiagnosticsCallback`, interleaved
(the order alternates each repeat) so that load from other processes hits both alike. The timed
part is `model.fit`, which includes the epoch-0 measure and writing the CSV after every epoch.
The verdict uses the time measured inside the callback, relative to the fit without it; the wall
ratio of the interleaved pairs is printed beside it, with its spread (single pairs vary by up
to 1.4x on a shared VM, so the wall ratio of a few repeats can cross 1.10 by noise alone).

    .venv/bin/python benchmarks/diagnostics_cost.py [--repeats 5] [--epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from synthetic import make_digits  # noqa: E402

from stages.lib.core.config import load_params  # noqa: E402
from stages.lib.training.diagnostics import DiagnosticsCallback, DiagnosticsLog, probe_indices  # noqa: E402

ACTIVATION = "relu"


class TimedDiagnostics(DiagnosticsCallback):
    """Also adds up the seconds spent in the callback itself: a figure that noise cannot hide."""

    seconds = 0.0

    def _emit(self, epoch: int) -> None:
        start = time.perf_counter()
        super()._emit(epoch)
        TimedDiagnostics.seconds += time.perf_counter() - start


def build_model(hidden_units: list[int], steps_per_execution: int, learning_rate: float):
    """The train stage's architecture (see stages/lib/training/model.py) with default settings."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(x)
    for number, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(units, activation=ACTIVATION, name=f"hidden_{number}")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=50_000)
    args = parser.parse_args()

    train = load_params(ROOT / "params.yaml").train
    images, labels = make_digits(args.train_size, seed=0)
    probe = probe_indices(len(images), train.diagnostics.probe_size, seed=0)
    output = Path(tempfile.mkdtemp(prefix="diagnostics-cost-")) / "diagnostics.csv"

    def timed_fit(with_diagnostics: bool) -> float:
        model = build_model(
            train.architectures[train.architecture[0]],
            train.steps_per_execution,
            train.optimizers["adam"].settings["learning_rate"],
        )
        callbacks = []
        if with_diagnostics:
            log = DiagnosticsLog()

            def on_measure(epoch: int, values: dict[str, float]) -> None:
                log.add(epoch, values)
                log.write(output)

            callbacks.append(TimedDiagnostics(images[probe], labels[probe], ACTIVATION, on_measure))
        start = time.perf_counter()
        model.fit(
            images, labels, batch_size=train.batch_size[0], epochs=args.epochs,
            callbacks=callbacks, verbose=0,
        )  # fmt: skip
        return time.perf_counter() - start

    timed_fit(True)  # warm-up: first-use costs of TensorFlow are nobody's share
    TimedDiagnostics.seconds = 0.0
    times: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for with_diagnostics in (True, False) if repeat % 2 else (False, True):
            seconds = timed_fit(with_diagnostics)
            times[with_diagnostics].append(seconds)
            label = "with   " if with_diagnostics else "without"
            print(f"repeat {repeat + 1} {label} diagnostics: {seconds:6.2f} s", flush=True)

    with_median = statistics.median(times[True])
    without_median = statistics.median(times[False])
    pairs = np.divide(times[True], times[False])
    inside = TimedDiagnostics.seconds / args.repeats
    cost = 1 + inside / without_median  # measured where it is spent: steady on a noisy VM
    print(
        f"median fit time over {args.epochs} epochs of {len(images)} images: "
        f"{with_median:.2f} s with, {without_median:.2f} s without diagnostics"
    )
    print(f"pairwise wall ratios (with / without): {np.round(pairs, 3).tolist()}")
    print(
        f"time inside the callback: {inside:.3f} s per fit ({args.epochs + 1} measures + CSV "
        f"writes) = {inside / without_median:.1%} of the fit time without diagnostics"
    )
    print(
        f"ratio (fit + time inside the callback) / fit: {cost:.3f} (target <= 1.10) -> "
        f"{'OK' if cost <= 1.10 else 'TOO SLOW'}; median pairwise wall ratio "
        f"{statistics.median(pairs):.3f} (noise on this VM: single pairs "
        f"{pairs.min():.2f}-{pairs.max():.2f})"
    )


if __name__ == "__main__":
    main()
