"""Training the grid, by concept:

- the grid: which cells train and why (grid_plan.py), a cell as handed to a worker and back
  (cell_job.py), progress lines (progress.py);
- one cell: its training on a worker (cell_training.py), device and determinism (device.py), the
  model (model.py), batches (batches.py), the fit with its callbacks and early stopping
  (fitting.py, callbacks.py), checkpoints and resume (checkpoint.py), diagnostics
  (diagnostics.py, probe_measures.py), its MLflow run (mlflow_run.py), its files (outputs.py).

May import: core, data, tracking.
"""
