"""The study compared: reading every cell's results (cell_results.py), statistics (stats.py),
the tables, figures and sentences of the report (study_*.py, diagnostic_figures.py,
figure_kit.py), the report's MLflow run (report_run.py, report_tracking.py), and
`mlpstudy compare` over MLflow runs (compare.py, compare_view.py).

May import: core, tracking.
"""
