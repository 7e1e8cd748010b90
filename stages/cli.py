"""The `mlpstudy` command: one small command per DVC stage, plus `predict`, `compare` and `ui`.

Commands are thin: read and validate `params.yaml`, build the paths, call the stage's pure `run`.
Stage modules are imported inside each command, so `mlpstudy download` never imports TensorFlow.
Exit codes: 0 done, 1 the work failed (a message says why), 2 bad input (config, arguments, files).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from stages.lib.core.config import ConfigError, Params, load_params
from stages.lib.core.errors import StageError, describe
from stages.lib.core.paths import Paths
from stages.lib.tracking.study_view import UI_HOST, UI_PORT

app = typer.Typer(
    help="Reproducible MLP studies on MNIST. Run the whole pipeline with `dvc repro`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ROOT = typer.Option(Path("."), "--root", help="Project root (holds params.yaml).")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Known failures become one line on stderr and an exit code, not a traceback."""
    try:
        yield
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except StageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except Exception as error:  # the MLflow store or a disk failing mid-run; else a bug: re-raised
        message = describe(error)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None


def _setup(root: Path) -> tuple[Params, Paths]:
    paths = Paths.at(root)
    return load_params(paths.params), paths


@app.command()
def download(root: Path = ROOT) -> None:
    """Fetch and verify the four MNIST IDX files into data/raw/ ($MLPSTUDY_MNIST_MIRROR first)."""
    with _user_errors():
        params, paths = _setup(root)
        from stages import download as stage

        stage.run(params.download, paths)


@app.command()
def preprocess(root: Path = ROOT) -> None:
    """Parse the IDX files, split off a stratified validation set, write arrays and statistics."""
    with _user_errors():
        params, paths = _setup(root)
        from stages import preprocess as stage

        stage.run(params.preprocess, paths)


@app.command()
def train(
    root: Path = ROOT,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print which cells would train, and why; train none."
    ),
) -> None:
    """Train every cell of the grid whose result is not up to date, on a Dask cluster (a local
    one by default; DASK_SCHEDULER_ADDRESS names another). What `dvc repro` runs as `train`."""
    with _user_errors():
        params, paths = _setup(root)
        from stages import train as stage

        stage.run(params, paths, dry_run=dry_run)


@app.command()
def evaluate(root: Path = ROOT) -> None:
    """Evaluate every trained cell of the grid on the test split (one process for all cells)."""
    with _user_errors():
        params, paths = _setup(root)
        from stages import evaluate as stage

        stage.run(params, paths)


@app.command()
def report(root: Path = ROOT) -> None:
    """Compare the whole study: tables, figures, reports/study/index.html, one MLflow run."""
    with _user_errors():
        params, paths = _setup(root)
        from stages import report as stage

        stage.run(params, paths)


@app.command()
def predict(
    files: list[Path] = typer.Argument(
        ...,
        help="PNG/JPEG images of 28x28 pixels, or IDX image files (.gz too).",
        show_default=False,
    ),
    cell: str | None = typer.Option(
        None,
        "--cell",
        help="Use data/exported/<cell>/classifier.keras, e.g. relu-he_normal-adam-base-256-0.0-0.",
    ),
    model: Path | None = typer.Option(None, "--model", help="Use this Keras model file instead."),
    invert: bool = typer.Option(
        False,
        "--invert",
        help="Invert the images: for black digits on white (MNIST is white on black).",
    ),
    root: Path = ROOT,
) -> None:
    """Classify digit images with a cell's exported model: file, index, digit, probability."""
    with _user_errors():
        from stages.lib.evaluation import predict as predicting

        table = predicting.run(files, Paths.at(root), cell=cell, model=model, invert=invert)
        typer.echo(table)


@app.command()
def compare(
    study: str | None = typer.Option(
        None, "--study", help="The study's MLflow experiment (default: study.name in params.yaml)."
    ),
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else mlflow.db at the root).",
    ),
    where: list[str] = typer.Option(
        [],
        "--where",
        metavar="COLUMN=VALUE",
        help="Keep matching runs; repeatable (one column: any of its values; several: all).",
    ),
    sort: str = typer.Option("test/accuracy", "--sort", help="Column to sort by."),
    ascending: bool = typer.Option(
        False, "--ascending", help="Sort ascending (default: descending)."
    ),
    latest: bool = typer.Option(False, "--latest", help="Only the newest run of each cell."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the table (all columns) here."),
    root: Path = ROOT,
) -> None:
    """Compare the study's cell runs from the MLflow store: filter, sort, print, export CSV."""
    with _user_errors():
        from stages.lib.reporting import compare as comparing

        comparing.run(study, tracking_uri, where, sort, ascending, latest, csv, root)


@app.command()
def ui(
    host: str = typer.Option(UI_HOST, "--host", help="Address to serve the UI on."),
    port: int = typer.Option(UI_PORT, "--port", help="Port to serve the UI on."),
    root: Path = ROOT,
) -> None:
    """MLflow's UI on the study's store; prints the link that opens on the study's comparison."""
    with _user_errors():
        params, paths = _setup(root)
        from stages.lib.tracking import study_ui

        study_ui.serve(params.study.name, paths, host, port)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
