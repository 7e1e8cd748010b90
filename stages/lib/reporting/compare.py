"""`mlpstudy compare`: the study's cell runs, read back from any MLflow store, as one table.

It needs only the store and the study's name, not this checkout's files: a colleague's
`mlflow server` works as well as the local mlflow.db. Rows are cell runs (tag `kind=cell`), so the
study-level report run never shows up as a cell. A cell trained twice (another commit, a
`dvc exp run`) has two rows, newest first; `latest` keeps only the newest run of each cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from stages.lib.core.config import ConfigError, load_params
from stages.lib.core.paths import Paths
from stages.lib.reporting.compare_view import (
    FACTORS,
    METRICS,
    SHOWN,
    print_table,
    select,
    shown_columns,
    write_csv,
)
from stages.lib.tracking import runs, tracking


def study_name(study: str | None, root: Path) -> str:
    """`--study`, else `study.name` of the params.yaml at `root` (if there is one)."""
    if study:
        return study
    params_file = Paths.at(root).params
    if not params_file.is_file():
        raise ConfigError(
            f"--study: not given, and there is no params.yaml at {params_file.parent} to read "
            "study.name from; pass --study NAME"
        )
    return load_params(params_file).study.name


def run(
    study: str | None,
    tracking_uri: str | None,
    where: Sequence[str],
    sort: str,
    ascending: bool,
    latest: bool,
    csv: Path | None,
    root: Path,
) -> pd.DataFrame:
    """Load, filter, sort, print, and write the CSV; returns the table as printed (all columns)."""
    name = study_name(study, root)
    uri = store_uri(tracking_uri, root)
    found = load_runs(uri, name)
    table = select(found, where, sort, ascending, latest)
    if csv is not None:
        write_csv(table, csv)
    shown = f"{len(table)} of {len(found)}" if len(table) != len(found) else str(len(found))
    print_table(table, shown_columns(table, where, sort), f"{name}: {shown} cell runs ({uri})")
    return table


def store_uri(tracking_uri: str | None, root: Path) -> str:
    """`--tracking-uri`, else the same store train uses; checks it exists before reading it.

    A missing sqlite file is an error rather than a new empty store: compare only reads.
    """
    uri = tracking_uri or tracking.tracking_uri(Paths.at(root))
    database = tracking.sqlite_file(uri)
    if database is not None and not database.is_file():
        raise ConfigError(
            f"--tracking-uri: no MLflow store at {database}; run the pipeline (`dvc repro`) "
            "first, or pass --tracking-uri (sqlite:///path/to/mlflow.db or http://host:port)"
        )
    if uri.startswith(("http://", "https://")):
        tracking.check_server(uri, "--tracking-uri")
    return uri


def load_runs(uri: str, study: str) -> pd.DataFrame:
    """One row per cell run of `study`: cell key, factors, metrics, params, start time, run id."""
    client = MlflowClient(uri)
    if client.get_experiment_by_name(study) is None:
        experiments = runs.every_page(client.search_experiments)
        names = sorted(e.name for e in experiments if e.name != "Default")
        raise ConfigError(
            f"--study: no experiment {study!r} in {uri}; experiments there: "
            f"{', '.join(names) if names else 'none'}"
        )
    rows = [_row(run) for run in runs.find_runs(study, uri)]
    table = pd.DataFrame(rows, columns=_columns(rows))
    if not table.empty:
        for column in ("batch_size", "seed"):  # integers sort as numbers
            table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table


def _row(run: Run) -> dict[str, object]:
    params, metrics = run.data.params, run.data.metrics
    row: dict[str, object] = {"cell": run.data.tags.get("cell", run.info.run_name)}
    row |= {factor: params.get(factor) for factor in FACTORS}
    row |= {name: metrics.get(name) for name in METRICS}
    row |= {
        "start_time": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "status": run.info.status,
        "run_id": run.info.run_id,
        "dvc_exp": run.data.tags.get(runs.DVC_EXP_TAG, ""),
        "git_commit": run.data.tags.get("git_commit", ""),
    }
    row |= {name: value for name, value in sorted(params.items()) if name not in row}
    return row


def _columns(rows: list[dict[str, object]]) -> list[str]:
    columns = list(SHOWN)
    for row in rows:
        columns += [name for name in row if name not in columns]
    return columns
