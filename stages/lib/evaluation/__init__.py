"""The test split: loading a trained cell as a classifier (classifier.py), per-digit metrics and
confusion matrices (metrics.py), their tables and figures (evaluation_tables.py,
evaluation_figures.py), logging them into the cell's run (evaluation_tracking.py), which cells
are up to date (evaluation_record.py), and `mlpstudy predict` (predict.py).

May import: core, data, tracking.
"""
