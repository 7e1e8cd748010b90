"""Where a cell trains (CPU, one GPU, or mirrored over several devices), and deterministic setup.

Both must happen before TensorFlow creates its first tensor: hiding GPUs and enabling op
determinism are refused or ignored once the runtime is initialised.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from stages.lib.core.config import ConfigError, TrainParams


@dataclass(frozen=True)
class Placement:
    """The strategy to build and compile under, and a label of the device actually used."""

    strategy: Any  # tf.distribute.Strategy; the default strategy places ops on one device
    label: str  # "CPU:0", "GPU:0" or "mirrored:<replicas>"

    def scope(self) -> AbstractContextManager[Any]:
        return self.strategy.scope()


def select_device(train: TrainParams) -> Placement:
    """Apply `train.device` and `train.distribute`; raise ConfigError for a GPU that is absent.

    `distribute: mirrored` builds a `tf.distribute.MirroredStrategy` over every visible GPU, or,
    without one (or with `device: cpu`), over every logical CPU device. A process sees a single
    CPU device unless it split the CPU with `tf.config.set_logical_device_configuration` before
    TensorFlow initialised (the tests do, to exercise mirroring without a GPU).

    Under a strategy, Keras' `model.fit(batch_size=...)` is the GLOBAL batch: each step splits it
    evenly across the replicas (the cell's batch size / replicas each), and the gradients are
    summed across replicas so that one step equals a single-device step on the whole batch. The
    training result therefore matches single-device training up to float rounding.
    Keras 3 cannot run several steps per execution on more than one replica, so mirroring over
    several devices requires `train.steps_per_execution: 1`.
    """
    set_cpu_threads(train.cpu_threads)
    gpus = tf.config.list_physical_devices("GPU")
    if train.device == "gpu" and not gpus:
        raise ConfigError(
            "train.device: 'gpu' but TensorFlow sees no GPU; allowed: auto, cpu, gpu (with a GPU)"
        )
    if train.device == "cpu" and gpus:
        if tf.config.get_visible_devices("GPU"):  # a warm process hid them for an earlier cell
            tf.config.set_visible_devices([], "GPU")
        gpus = []
    if train.distribute == "mirrored":
        kind = "GPU" if gpus else "CPU"
        devices = [device.name for device in tf.config.list_logical_devices(kind)]
        if len(devices) > 1 and train.steps_per_execution > 1:
            raise ConfigError(
                f"train.steps_per_execution: {train.steps_per_execution} with train.distribute: "
                f"mirrored over {len(devices)} devices; Keras 3 fails to run several steps per "
                "execution on more than one replica; allowed: 1 (the setting changes speed only)"
            )
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Placement(strategy, f"mirrored:{strategy.num_replicas_in_sync}")
    return Placement(tf.distribute.get_strategy(), "GPU:0" if gpus else "CPU:0")


def set_cpu_threads(threads: int) -> None:
    """Run each TensorFlow op on `threads` CPU threads (0: TensorFlow's default, every core).

    One thread is the fastest for this project's small matmuls on a few cores (benchmarks/
    train_speed.py), and it makes the numbers independent of the machine's core count. The
    setting is fixed when TensorFlow initialises; a warm process (keyed by it) keeps its own.
    """
    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        raise ConfigError(
            f"train.cpu_threads: {threads} cannot take effect: TensorFlow already runs with "
            f"{tf.config.threading.get_intra_op_parallelism_threads()} threads per op in this "
            "process; start a new process (allowed: any integer >= 0 before TensorFlow starts)"
        ) from None


def make_deterministic(seed: int) -> None:
    """Same seed, same process start -> bitwise identical weights and metrics (on CPU).

    Seeds Python, NumPy, TensorFlow and Keras at once, and makes TensorFlow pick deterministic
    kernels (which also turns off XLA auto-clustering).
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
