"""The study's comparison as MLflow saved views: the runs table that `mlpstudy ui` and the report's
link open on, with the cells' test accuracy and speed, the varied factors as columns, sorted by
test accuracy and grouped by the first varied factor.

How MLflow 3.17's UI reads a saved view (its source, as built in the installed package): the
experiment tag `mlflow.sharedViewState.<id>` holds an envelope
`{"name", "createdAt", "updatedAt", "state"}` whose `state` is the view as a JSON string: the
search facets (`searchFilter`, `orderByKey`, `orderByAsc`, ...) and the table's state
(`selectedColumns`, `groupBy`, ...). `#/experiments/<experiment>/runs?viewStateShareKey=<id>`
opens it, unless the link also carries a search facet (`orderByKey`, `searchFilter`, ...); the
UI drops expanded parent rows from a view, so the view filters on the cell runs of the grid's
parent run instead of expanding it. Every view is listed in the page's "Views" menu (newest
`createdAt` first), so each varied factor gets its own view: another grouping is one click away.

Written by `report` through MLflow's experiment-tag API, so the same link works on a tracking
server. A DVC experiment (`dvc exp run`) gets views of its own, beside the workspace's.
"""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING

from stages.lib.core.config import AXES, FACTORS, Params

if TYPE_CHECKING:
    from stages.lib.tracking.tracking import Experiment

# The CLI reads UI_HOST and UI_PORT when it loads: modules that import MLflow load in functions.

VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's saved views of the runs table
SHARE_KEY = "viewStateShareKey"  # the URL parameter that opens one
WORKFLOW = "machine_learning"  # the URL's `workflowType`: MLflow UI's model-training views
UI_HOST = "127.0.0.1"  # where `mlpstudy ui` serves the local store by default
UI_PORT = 5000
# The outcome columns: test accuracy (evaluate logs it) and the epochs it took to reach the
# target validation accuracy (report logs it on each cell run).
ACCURACY = "test/accuracy"
OUTCOMES = (ACCURACY, "epochs_to_target")
OWN_PREFIX = "mlpstudy-"  # the ids of the views written here (the UI's own are random)
RUN_NAME = "attributes.`Run Name`"  # the UI's run-name column
WIDTHS = {"attributes": 320, "metrics": 140, "tags": 120}  # pixels: names and values unclipped


def column(kind: str, name: str) -> str:
    """The UI's key of a column: metrics.`test/accuracy`, tags.`activation`."""
    return f"{kind}.`{name}`"


def varied(params: Params) -> list[str]:
    """The grid's axes with more than one value, factors first (config.AXES order)."""
    return [axis for axis in AXES if len(getattr(params.train, axis)) > 1]


def view_prefix(dvc_experiment: str | None) -> str:
    """`mlpstudy-` for the workspace, `mlpstudy-exp-<name>-` for a DVC experiment."""
    if not dvc_experiment:
        return OWN_PREFIX
    return f"{OWN_PREFIX}exp-{re.sub(r'[^A-Za-z0-9_]+', '_', dvc_experiment)}-"


def view_states(params: Params, parent_run_id: str) -> dict[str | None, dict]:
    """Group-by factor (None: no factor varies) -> the view's state: the grid's cell runs (the
    children of its parent run), outcomes and varied axes as columns, best test accuracy first."""
    from stages.lib.tracking.runs import CELL_KIND
    from stages.lib.tracking.study_tracking import PARENT_TAG

    axes = varied(params)
    columns = [column("metrics", name) for name in OUTCOMES] + [column("tags", a) for a in axes]
    cells = f"tags.kind = '{CELL_KIND}' and tags.`{PARENT_TAG}` = '{parent_run_id}'"
    common = {
        "searchFilter": cells,
        "orderByKey": column("metrics", ACCURACY),
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": columns,
        "columnOrder": [RUN_NAME, *columns],  # outcomes first (the UI sorts metrics by name)
        "columnWidths": {key: WIDTHS[key.split(".")[0]] for key in [RUN_NAME, *columns]},
        "runsHiddenMode": "SHOW_ALL",  # every cell in the chart view too (default: first 10)
        "groupsExpanded": {},
    }
    return {
        factor: {**common, "groupBy": group_by(factor)}
        for factor in [axis for axis in axes if axis in FACTORS] or [None]
    }


def group_by(factor: str | None) -> dict | None:
    """The UI's group-by of runs by the `factor` tag, groups drawn as their mean in charts."""
    if factor is None:
        return None
    return {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": factor}]}


def view_name(factor: str | None, dvc_experiment: str | None) -> str:
    where = f" (DVC experiment {dvc_experiment})" if dvc_experiment else ""
    grouping = "every cell" if factor is None else f"by {factor.replace('_', ' ')}"
    return f"Study{where}: {grouping}"


def envelope(name: str, state: dict, created_at_ms: int) -> str:
    """The tag value MLflow's UI reads (savedViewEnvelope.ts): the state as a JSON string."""
    compact = {"separators": (",", ":")}
    view = {"name": name, "createdAt": created_at_ms, "updatedAt": created_at_ms}
    return json.dumps({**view, "state": json.dumps(state, **compact)}, **compact)


def write_views(
    experiment: Experiment, params: Params, parent_run_id: str, dvc_experiment: str | None
) -> str:
    """Write the study's views to the experiment (one per varied factor, the first factor's
    listed first), delete this workspace's or DVC experiment's views of factors that no longer
    vary; return the first view's id."""
    prefix = view_prefix(dvc_experiment)
    now = int(time.time() * 1000)
    wanted = {}
    for index, (factor, state) in enumerate(view_states(params, parent_run_id).items()):
        name = view_name(factor, dvc_experiment)
        own = f"{prefix}cells" if factor is None else f"{prefix}by-{factor}"
        wanted[own] = envelope(name, state, now - index)  # the first is the newest
    client = experiment.client
    for own in _own_views(client.get_experiment(experiment.experiment_id).tags, prefix):
        if own not in wanted:  # e.g. a factor that no longer varies
            client.delete_experiment_tag(experiment.experiment_id, VIEW_TAG_PREFIX + own)
    for own, value in wanted.items():
        client.set_experiment_tag(experiment.experiment_id, VIEW_TAG_PREFIX + own, value)
    return next(iter(wanted))


def _own_views(tags: dict[str, str], prefix: str) -> dict[str, str]:
    """View id -> envelope of the views written for `prefix` (`mlpstudy-` would also match
    the ids of DVC experiments' views, `mlpstudy-exp-...`: the rest must be ours)."""
    pattern = re.compile(re.escape(VIEW_TAG_PREFIX + prefix) + r"(cells|by-\w+)")
    return {
        key.removeprefix(VIEW_TAG_PREFIX): value
        for key, value in tags.items()
        if pattern.fullmatch(key)
    }


def study_view_id(tags: dict[str, str], dvc_experiment: str | None = None) -> str | None:
    """The id of the first view the latest report wrote (for the workspace by default), if any."""
    found = []
    for own, value in _own_views(tags, view_prefix(dvc_experiment)).items():
        try:
            found.append((json.loads(value)["createdAt"], own))
        except (ValueError, KeyError, TypeError):
            continue
    return max(found)[1] if found else None


def runs_url(base: str, experiment_id: str | None, view: str | None = None) -> str:
    """The UI's address of the experiment's runs, opened on `view` if given (the experiments
    list without an experiment)."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType={WORKFLOW}"
    shared = f"{SHARE_KEY}={view}&" if view else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{shared}workflowType={WORKFLOW}"


def ui_base(tracking_uri: str) -> str:
    """The UI's address: the tracking server itself, or where `mlpstudy ui` serves by default."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return f"http://{UI_HOST}:{UI_PORT}"
