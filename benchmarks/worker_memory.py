"""How much memory a process keeps per model it fits: why train workers restart between cells.

Each variant runs in a fresh Python process: --models times, build a small MLP with
`keras.Input` + Dense layers, compile it (adam, sparse categorical cross-entropy, accuracy) and
fit it one epoch on random data (2,000 x 784, batch 1,024, a validation split of 200), as a
train worker does per cell; the resident memory (RSS) is read after the first model and after
the last, and the growth per model printed for:

- graph:  Keras' default `fit` (traced `tf.function`s), TensorFlow op determinism on;
- cleaned: the same, then `keras.backend.clear_session(free_memory=True)`, `gc.collect()` and
           glibc's `malloc_trim(0)` after every model (what a worker could do between cells);
- eager:  `run_eagerly=True` (no traced functions), the control.

Measured here (TensorFlow 2.21, Keras 3, 60 models): graph 7.6 MB, cleaned 5.5 MB, eager 0.6 MB
per model: the memory stays with the traced functions, and nothing a process can call returns
it, so a worker restarts instead (stages/lib/cluster/recycling.py).

    .venv/bin/python benchmarks/worker_memory.py [--models 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

VARIANTS = ("graph", "cleaned", "eager")

CHILD = r"""
import ctypes, ctypes.util, gc, sys
import keras, numpy as np, psutil, tensorflow as tf

variant, models = sys.argv[1], int(sys.argv[2])
keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
x = np.random.default_rng(0).random((2000, 784), dtype=np.float32)
y = np.random.default_rng(1).integers(0, 10, 2000)
libc = ctypes.CDLL(ctypes.util.find_library("c"))


def fit_one():
    inputs = keras.Input((784,), name="pixels")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden_1")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        run_eagerly=variant == "eager",
    )
    model.fit(x, y, batch_size=1024, epochs=1, verbose=0, validation_data=(x[:200], y[:200]))


for index in range(models):
    fit_one()
    if variant == "cleaned":
        keras.backend.clear_session(free_memory=True)
        gc.collect()
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    if index == 0:
        first = psutil.Process().memory_info().rss
last = psutil.Process().memory_info().rss
print((last - first) / (models - 1) / 2**20, last / 2**20)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=60, help="models fitted per variant")
    args = parser.parse_args()
    if args.models < 2:
        parser.error(f"--models is {args.models}; allowed: 2 or more")
    print(f"memory kept per fitted model, {args.models} models per fresh process")
    for variant in VARIANTS:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, variant, str(args.models)],
            capture_output=True,
            text=True,
            check=True,
        )
        per_model, resident = (float(value) for value in result.stdout.split())
        print(
            f"  {variant:8} {per_model:6.2f} MB per model ({resident:.0f} MB resident at the end)"
        )


if __name__ == "__main__":
    main()
