"""MLflow: which store and experiment (tracking.py, store_check.py), creating and finding runs
(runs.py), what a run logs (tracking_log.py), logging again only what changed
(changed_metrics.py), how a study reads in MLflow's UI: the experiment's description, the grid
revision's parent run, factor tags (study_tracking.py), the study's saved views of the runs table
(study_view.py), and the UI link (study_ui.py).

May import: core.
"""
