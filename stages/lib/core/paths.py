"""Every path of the project, defined once, relative to the project root.

`dvc.yaml` declares the same paths as deps and outs; tests/test_layout.py checks they agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class Paths:
    root: Path

    @classmethod
    def at(cls, root: Path | str = ".") -> Paths:
        return cls(Path(root).resolve())

    # --- inputs
    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    # --- download
    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    # --- preprocess
    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def preprocess_reports(self) -> Path:
        return self.root / "reports" / "preprocess"

    # --- train (one folder per grid cell in each)
    @property
    def models(self) -> Path:
        return self.root / "data" / "models"

    @property
    def train_reports_dir(self) -> Path:
        return self.root / "reports" / "train"

    def model_dir(self, cell_key: str) -> Path:
        return self.models / cell_key

    def model_file(self, cell_key: str) -> Path:
        """The trained Keras model that evaluate reads."""
        return self.model_dir(cell_key) / "model.keras"

    def run_record(self, cell_key: str) -> Path:
        """run.json: the cell's MLflow run id (and logged model), for evaluate to log into."""
        return self.model_dir(cell_key) / "run.json"

    def train_reports(self, cell_key: str) -> Path:
        return self.train_reports_dir / cell_key

    # --- evaluate
    @property
    def exported(self) -> Path:
        return self.root / "data" / "exported"

    def export_dir(self, cell_key: str) -> Path:
        return self.exported / cell_key

    # reports/evaluate/ is grouped by kind, so dvc.yaml declares each kind once for every cell:
    # metrics/ (per-cell JSON in git, read with `dvc metrics show reports/evaluate/metrics`),
    # tables/ (small CSVs, in git), predictions/ (DVC's confusion plots) and figures/ (image
    # plots), both in DVC's cache and in its .gitignore there.
    @property
    def evaluate_reports(self) -> Path:
        return self.root / "reports" / "evaluate"

    @property
    def evaluate_metrics_dir(self) -> Path:
        return self.evaluate_reports / "metrics"

    @property
    def evaluate_predictions_dir(self) -> Path:
        return self.evaluate_reports / "predictions"

    @property
    def evaluate_tables_dir(self) -> Path:
        return self.evaluate_reports / "tables"

    @property
    def evaluate_figures_dir(self) -> Path:
        return self.evaluate_reports / "figures"

    @property
    def evaluate_outputs(self) -> tuple[Path, ...]:
        """Every folder evaluate writes, each a DVC output kept from run to run (`persist`):
        evaluate itself rewrites the files of the cells it evaluates and removes the files of
        cells no longer in the grid."""
        return (
            self.exported,
            self.evaluate_metrics_dir,
            self.evaluate_predictions_dir,
            self.evaluate_tables_dir,
            self.evaluate_figures_dir,
        )

    def evaluate_cell_outputs(self, cell_key: str) -> tuple[Path, ...]:
        """What evaluate writes for a cell, each entry directly inside one of evaluate_outputs."""
        cell = (self.export_dir, self.evaluate_metrics, self.evaluate_predictions)
        cell += (self.evaluate_tables, self.evaluate_figures)
        return tuple(path(cell_key) for path in cell)

    def evaluate_record(self, cell_key: str) -> Path:
        """What the cell's evaluate files were made from, written after them (evaluate skips the
        cell while its inputs match: stages/lib/evaluation/evaluation_record.py)."""
        return self.export_dir(cell_key) / "evaluated.json"

    def evaluate_metrics(self, cell_key: str) -> Path:
        return self.evaluate_metrics_dir / f"{cell_key}.json"

    def evaluate_predictions(self, cell_key: str) -> Path:
        return self.evaluate_predictions_dir / f"{cell_key}.csv"

    def evaluate_tables(self, cell_key: str) -> Path:
        """per_digit.csv and confusion.csv of one cell."""
        return self.evaluate_tables_dir / cell_key

    def evaluate_figures(self, cell_key: str) -> Path:
        """confusion.png and misclassified.png of one cell."""
        return self.evaluate_figures_dir / cell_key

    # --- report
    @property
    def study_report(self) -> Path:
        return self.root / "reports" / "study"

    # --- outside DVC's outputs
    @property
    def checkpoints(self) -> Path:
        """Per-epoch training checkpoints, keyed by each cell's full configuration."""
        return self.root / ".mlpstudy" / "checkpoints"

    @property
    def mlflow_db(self) -> Path:
        """The default MLflow tracking store (`mlflow ui` run from the root opens it)."""
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"


def display_path(path: Path, root: Path | None) -> str:
    """`path` as the user knows it: relative to the project root when it is inside it."""
    if root is not None:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            pass
    return str(path)
