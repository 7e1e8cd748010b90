"""The study's saved views in a real sqlite MLflow store: what `report` writes, what a new grid
removes, and the link `mlpstudy ui` prints. That MLflow's UI opens them as intended is checked in
a real browser by tests/test_mlflow_ui.py.
"""

from __future__ import annotations

import json

import pytest
from test_report import make_params

from stages.lib.core.paths import Paths
from stages.lib.tracking import study_ui, study_view, tracking

PREFIX = study_view.VIEW_TAG_PREFIX


@pytest.fixture
def experiment(tmp_path, monkeypatch) -> tracking.Experiment:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.open_experiment("study", Paths.at(tmp_path))


def views(experiment: tracking.Experiment) -> dict[str, dict]:
    """View id -> (envelope, with its state parsed) of every saved view on the experiment."""
    tags = experiment.client.get_experiment(experiment.experiment_id).tags
    found = {}
    for key, value in tags.items():
        if key.startswith(PREFIX):
            envelope = json.loads(value)
            found[key.removeprefix(PREFIX)] = {**envelope, "state": json.loads(envelope["state"])}
    return found


def test_one_view_per_varied_factor_in_mlflow_s_envelope(experiment) -> None:
    params = make_params()  # activation x 3, optimizer x 2, seed x 2; the rest one value each
    first = study_view.write_views(experiment, params, "parent-id", None)
    written = views(experiment)
    assert first == "mlpstudy-by-activation"
    assert set(written) == {"mlpstudy-by-activation", "mlpstudy-by-optimizer"}
    view = written[first]
    assert view["name"] == "Study: by activation"
    assert view["createdAt"] > written["mlpstudy-by-optimizer"]["createdAt"]  # listed first
    state = view["state"]
    assert state["selectedColumns"] == [
        "metrics.`test/accuracy`",
        "metrics.`epochs_to_target`",
        "tags.`activation`",
        "tags.`optimizer`",
        "tags.`seed`",
    ]
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`test/accuracy`", False)
    assert state["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "activation"}]
    assert state["searchFilter"] == "tags.kind = 'cell' and tags.`mlflow.parentRunId` = 'parent-id'"
    assert "runsExpanded" not in state  # the UI drops it from shared views


def test_a_new_grid_replaces_its_own_views_only(experiment) -> None:
    client, eid = experiment.client, experiment.experiment_id
    study_view.write_views(experiment, make_params(), "p1", None)
    study_view.write_views(experiment, make_params(), "p9", "urban-tusk")  # a DVC experiment's
    client.set_experiment_tag(
        eid, f"{PREFIX}a1b2c3", json.dumps({"name": "mine", "createdAt": 1, "state": "{}"})
    )  # a user's
    one_activation = make_params(activation=["relu"])
    assert study_view.write_views(experiment, one_activation, "p2", None) == "mlpstudy-by-optimizer"
    assert set(views(experiment)) == {
        "mlpstudy-by-optimizer",
        "mlpstudy-exp-urban_tusk-by-activation",
        "mlpstudy-exp-urban_tusk-by-optimizer",
        "a1b2c3",
    }
    only_seeds = make_params(activation=["relu"], optimizer=["adam"])
    assert study_view.write_views(experiment, only_seeds, "p3", None) == "mlpstudy-cells"
    assert views(experiment)["mlpstudy-cells"]["state"]["groupBy"] is None


def test_the_ui_link_opens_the_workspace_s_first_view_or_the_plain_table(experiment) -> None:
    uri, eid = experiment.tracking_uri, experiment.experiment_id
    base = "http://127.0.0.1:5000"
    plain = f"{base}/#/experiments/{eid}/runs?workflowType=machine_learning"
    assert study_ui.study_link(base, uri, "study") == plain  # before the first report
    study_view.write_views(experiment, make_params(), "p9", "urban-tusk")
    assert study_ui.study_link(base, uri, "study") == plain  # a DVC experiment's view is not it
    study_view.write_views(experiment, make_params(), "p1", None)
    assert study_ui.study_link(base, uri, "study") == (
        f"{base}/#/experiments/{eid}/runs?viewStateShareKey=mlpstudy-by-activation"
        "&workflowType=machine_learning"
    )
    assert study_ui.study_link(base, uri, "no such study") == (
        f"{base}/#/experiments?workflowType=machine_learning"
    )
