"""How a study reads in MLflow's UI: the experiment's kind and description, and one parent run per
grid revision holding the cells of that grid (and the study report) as its children.

Why parent runs rather than tags alone: MLflow's runs table nests child runs under their parent,
so each grid revision is one row that opens onto its cells, and runs of an earlier grid stay apart
from the current one; "Group by" a factor (a param and a tag on every cell) still regroups the
cells of the current view across parents, with the chart view drawing each group's mean and range.
A grid revision is the part of `params.yaml` that the cells of the grid read (the lists, the shared
train settings, the hyperparameters of the names in the lists), digested: the same grid gets the
same parent, in every process. Cells run in parallel (queued `dvc exp run`) get-or-create it under
the sqlite store's lock; on a tracking server, where no lock spans processes, every process keeps
the oldest parent and deletes a duplicate it created itself.
"""

from __future__ import annotations

import hashlib
import json

from mlflow.entities import Run, ViewType

from stages.lib.core.cell_config import SHARED_SETTINGS, VARIANTS, hyperparameters
from stages.lib.core.config import AXES, Params
from stages.lib.core.grid import Cell
from stages.lib.tracking import runs, tracking

GRID_KIND = "grid"  # value of the `kind` tag on a grid revision's parent run
REVISION_TAG = "grid_revision"
# Tags MLflow's UI reads.
KIND_TAG = "mlflow.experimentKind"  # the experiment's kind: its model-training view
TRAINING_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # description of an experiment or a run (markdown)
PARENT_TAG = "mlflow.parentRunId"
SOURCE_NAME_TAG = "mlflow.source.name"  # the "Source" column
SOURCE_TYPE_TAG = "mlflow.source.type"
REPORT_FILE = "index.html"


def grid_revision(params: Params) -> str:
    """12 hex digits naming what the grid's cells read; equal for equal grids."""
    train = params.train
    hyper = {
        factor: {name: hyperparameters(train, factor, name) for name in getattr(train, factor)}
        for factor in VARIANTS
    }
    definition = {
        "study": params.study.name,
        **{axis: list(getattr(train, axis)) for axis in AXES},
        **train.model_dump(include=set(SHARED_SETTINGS)),
        "architectures": {name: train.architectures[name] for name in train.architecture},
        "hyperparameters": hyper,
    }
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def grid_line(params: Params) -> str:
    """`activation: relu, tanh · ... · dropout: 0.0 · seed: 0, 1 (4 cells)`."""
    train = params.train
    values = [list(getattr(train, axis)) for axis in AXES]
    cells = 1
    for levels in values:
        cells *= len(levels)
    axes = " · ".join(
        f"{axis}: {', '.join(map(str, levels))}" for axis, levels in zip(AXES, values, strict=True)
    )
    return f"{axes} ({cells} cells)"


def experiment_description(params: Params) -> str:
    """The experiment's description (markdown): the question, the grid, the runs, the report."""
    train = params.train
    architectures = ", ".join(f"{n} {train.architectures[n]}" for n in train.architecture)
    return "\n\n".join(
        [
            f"**{params.study.name}**: how do the activation function, the weight initializer "
            "and the optimizer change what an MLP learns on MNIST?",
            f"**Grid** (latest revision `{grid_revision(params)}`): {grid_line(params)}. "
            f"Architectures (hidden units): {architectures}. Shared: at most {train.epochs} "
            "epochs.",
            f"**Runs**: one per cell, named `{'-'.join(f'<{axis}>' for axis in AXES)}`, "
            "nested under a parent run `grid-<revision>` per grid revision together with the "
            "`study-report` run. Every factor is a param and a tag (columns, Group by); "
            "`test/accuracy` and the other test metrics arrive with `evaluate`.",
            f"**Report**: artifact `{REPORT_FILE}` of the `study-report` run; "
            "`reports/study/summary.md` in the project.",
        ]
    )


def describe_experiment(experiment: tracking.Experiment, params: Params) -> None:
    """Set the experiment's kind and description where they differ (one read, few writes)."""
    wanted = {KIND_TAG: TRAINING_KIND, NOTE_TAG: experiment_description(params)}
    client = experiment.client
    present = client.get_experiment(experiment.experiment_id).tags
    for key, value in wanted.items():
        if present.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)


def cell_tags(parent_run_id: str, params: Params, cell: Cell) -> dict[str, str]:
    """A cell run's place in the study: parent, revision, factors, source and description."""
    return {
        PARENT_TAG: parent_run_id,
        REVISION_TAG: grid_revision(params),
        **{axis: str(getattr(cell, axis)) for axis in AXES},
        SOURCE_NAME_TAG: f"mlpstudy train (cell {cell.key})",
        SOURCE_TYPE_TAG: "LOCAL",
        NOTE_TAG: (
            f"Cell {cell.key} of {params.study.name}: "
            + ", ".join(f"{axis.replace('_', ' ')} {getattr(cell, axis)}" for axis in AXES)
            + f" (grid {grid_revision(params)})."
        ),
    }


def grid_parent(experiment: tracking.Experiment, params: Params) -> str:
    """The id of the grid revision's parent run, created if absent; race-free (see above)."""
    revision = grid_revision(params)
    created = None
    with tracking.store_lock(experiment.tracking_uri):
        found = _parents(experiment, revision)
        if not found:
            created = _create_parent(experiment, params, revision)
            found = _parents(experiment, revision)
    winner = found[0].info.run_id
    if created is not None and created != winner:  # another process won the race
        experiment.client.delete_run(created)
    return winner


def _parents(experiment: tracking.Experiment, revision: str) -> list[Run]:
    dvc_exp = runs.dvc_experiment()
    found = experiment.client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.kind = '{GRID_KIND}' and tags.{REVISION_TAG} = '{revision}'",
        run_view_type=ViewType.ACTIVE_ONLY,
    )
    mine = [run for run in found if run.data.tags.get(runs.DVC_EXP_TAG) == dvc_exp]
    return sorted(mine, key=lambda run: (run.info.start_time, run.info.run_id))


def _create_parent(experiment: tracking.Experiment, params: Params, revision: str) -> str:
    dvc_exp = runs.dvc_experiment()
    where = f" in DVC experiment {dvc_exp}" if dvc_exp else ""
    tags = {
        "kind": GRID_KIND,
        "study": params.study.name,
        REVISION_TAG: revision,
        SOURCE_NAME_TAG: "dvc repro",
        SOURCE_TYPE_TAG: "LOCAL",
        NOTE_TAG: f"Grid revision {revision} of {params.study.name}{where}: {grid_line(params)}.",
        **({runs.DVC_EXP_TAG: dvc_exp} if dvc_exp else {}),
    }
    client = experiment.client
    run = client.create_run(experiment.experiment_id, run_name=f"grid-{revision}", tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED")  # a container, not a process
    return run.info.run_id
