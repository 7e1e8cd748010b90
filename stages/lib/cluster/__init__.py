"""The Dask cluster that runs a stage's cells: local by default, a real one by
DASK_SCHEDULER_ADDRESS. Connecting and refusing workers that run other versions or other code,
running a stage's cells with their shared data sent once per worker, failures and retries
(engine.py), and workers restarted between cells before TensorFlow's leftovers fill their
memory (recycling.py). train and evaluate both run on it; it changes no number.

May import: core.
"""
