"""mlpstudy: one module per DVC stage (download, preprocess, train, evaluate, report).

Each stage module has a pure ``run(cfg, paths, ...)`` that tests call and a thin Typer command
registered in :mod:`stages.cli`. Shared pieces live in :mod:`stages.lib`.
"""
