"""The MLflow UI as the dashboard, in a real browser on a real server: a ``mlflow server`` (Postgres
backend, proxied artifacts) records four audits of two registry versions of a tiny classifier
(``tests/tracking/dashboards.py``), and headless Chromium loads the pages ``make demo`` prints
(:func:`flows.demo.dashboard_links`): the audits' runs, a subject's figures, the drift charts (each top
interaction's line across versions 1 and 2) and version 2's registry page. Each DOM is dumped after the
page settled and checked for the runs, figure names and metric keys; each page is screenshot into the
test's tmp dir (``docs/dashboards.md`` describes them)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.demo import dashboard_links
from spex.records import tracking
from tests.report.test_report_browser import browser
from tests.tracking.dashboards import FEATURES, HEADS, MODEL, Dashboard, build_dashboard

BUDGETS_MS = (15_000, 30_000, 60_000)  # virtual time for the SPA to fetch and draw; more on a slow machine
WINDOW = "1400,1000"


def chromium(url: str, out: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url``. ``--run-all-compositor-stages-before-draw`` makes the frames that
    virtual time advances through really draw: without it the charts (drawn on animation frames) are
    sometimes still empty when the budget runs out."""
    return subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
         "--run-all-compositor-stages-before-draw", f"--user-data-dir={out}", f"--window-size={WINDOW}", *args, url],
        capture_output=True, text=True, timeout=300)


def settled_dom(url: str, tmp: Path, expect: Iterable[str]) -> str:
    """The DOM of ``url`` once the single-page app has drawn everything in ``expect`` (dumped with a
    growing virtual-time budget until it has: the app fetches from the server before it draws)."""
    expect = list(expect)
    dom = ""
    for i, budget in enumerate(BUDGETS_MS):
        proc = chromium(url, tmp / f"profile-dom-{i}", f"--virtual-time-budget={budget}", "--dump-dom")
        assert proc.returncode == 0, proc.stderr[-3000:]
        dom = proc.stdout
        if all(text in dom for text in expect):
            break
    (tmp / "last-dom.html").write_text(dom)  # what the browser had, to look at when an assertion fails
    missing = [text for text in expect if text not in dom]
    assert not missing, f"{url}: not in the page after {BUDGETS_MS[-1]} ms: {missing}"
    return dom


def screenshot(url: str, path: Path) -> Path:
    proc = chromium(url, path.parent / f"profile-{path.stem}", f"--virtual-time-budget={BUDGETS_MS[1]}",
                    f"--screenshot={path}")
    assert path.is_file() and path.stat().st_size > 20_000, proc.stderr[-3000:]
    from PIL import Image, ImageStat

    assert max(ImageStat.Stat(Image.open(path).convert("RGB")).stddev) > 10, f"{path} is blank"
    return path


@pytest.fixture(scope="module")
def dashboard(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Dashboard:
    browser()  # skips (or fails, SPEX_REQUIRE_CHROMIUM=1) before minutes of set-up when there is no browser
    from spex.settings import scoped_environ

    root = tmp_path_factory.mktemp("dashboards")
    with scoped_environ({"SPEX_DATA_DIR": str(root / "data"), "MLFLOW_TRACKING_URI": mlflow_server}):
        yield build_dashboard(mlflow_server, root, db_url=f"sqlite:///{root / 'meta.db'}")


@pytest.fixture(scope="module")
def links(dashboard: Dashboard) -> dict[str, str]:
    """What ``make demo`` prints for these audits, by the first words of each line."""
    outcomes = [(f"{kind} · {spec['name']}", dashboard.outcome(spec["name"], version))
                for spec in (FEATURES, HEADS) for kind, version in (("audit", "1"), ("release", "2"))]
    printed = dashboard_links(outcomes, model=MODEL, version="2", tracking_uri=dashboard.server)
    return {what: address for what, address in printed}


def find(links: dict[str, str], start: str) -> list[str]:
    return [address for what, address in links.items() if what.startswith(start)]


def test_the_experiment_opens_on_the_runs_named_by_model_version_spec_and_verdict(dashboard, links, tmp_path):
    (runs,) = find(links, "runs of the audits of")
    assert runs.startswith(dashboard.server) and runs.endswith("/runs?workflowType=machine_learning")
    names = [f"{kind} v{v} · {spec['name']} · passed"
             for spec in (FEATURES, HEADS) for kind, v in (("audit", "1"), ("release", "2"))]
    dom = settled_dom(runs, tmp_path, names)
    assert "<title>Runs - Experiment" in dom
    # without the tab in the address the experiment still opens on its runs, not the GenAI overview
    experiment = dashboard.outcome("ui-features", "1").mlflow_experiment_id
    landing = settled_dom(f"{dashboard.server}/#/experiments/{experiment}{tracking.UI_MODE}", tmp_path, names[:1])
    assert "<title>Runs - Experiment" in landing
    client = MlflowClient(dashboard.server)
    assert client.get_experiment(experiment).tags[tracking.TAG_EXPERIMENT_KIND] == "custom_model_development"
    release = client.get_run(dashboard.outcome("ui-features", "2").mlflow_run_id)
    note = release.data.tags[tracking.TAG_NOTE]
    assert "**release audit** of `tiny-sentiment-ui` version 2" in note and "| faithfulness_min |" in note
    screenshot(runs, tmp_path / "experiment-runs.png")


def test_a_subject_run_shows_its_figures(dashboard, links, tmp_path):
    (figures,) = find(links, "figures of subject negation")  # the last audit: the heads release
    assert figures.endswith("/artifacts/figures/interactions.png?workflowType=machine_learning")
    dom = settled_dom(figures, tmp_path, ["heads.png", "interactions.png", "pairs.png", 'alt="figures/interactions.png"'])
    assert "negation · v2 · ui-heads" in dom  # the run's name
    client = MlflowClient(dashboard.server)
    release = dashboard.outcome("ui-features", "2")
    food = next(r for r in client.search_runs([release.mlflow_experiment_id],
                                              f"tags.`mlflow.parentRunId` = '{release.mlflow_run_id}'")
                if r.data.tags["spex.subject"] == "food")
    text_figures = tracking.run_url(dashboard.server, release.mlflow_experiment_id, food.info.run_id,
                                    "artifacts/figures/text.png")
    settled_dom(text_figures, tmp_path, ["text.png", "interactions.png", "pairs.png", 'alt="figures/text.png"'])
    assert {f.path for f in client.list_artifacts(release.mlflow_run_id, "figures/release")} == {
        "figures/release/food.png", "figures/release/service.png"}
    screenshot(figures.replace("interactions.png", "heads.png"), tmp_path / "subject-heads-figure.png")
    screenshot(text_figures, tmp_path / "subject-text-figure.png")


def test_the_drift_charts_draw_each_top_interaction_across_versions_1_and_2(dashboard, links, tmp_path):
    drift = {address.split("/runs/")[1].split("/")[0]: address for address in find(links, "interaction drift")}
    assert len(drift) == 3  # ui-features · food, ui-features · service, ui-heads · negation
    client = MlflowClient(dashboard.server)
    release = dashboard.outcome("ui-features", "2")
    (food,) = tracking.AuditTracker(dashboard.server).drift_runs(MODEL, spec_key="ui-features", subject="food")
    stems = [tracking.interaction_key("fbii", r["members"], r.get("labels"))
             for r in release.subjects["food"].ranking[:FEATURES["ranking"]["top_k"]]]
    for stem in stems:  # version 2's top interactions, each with a point per version it was recorded at
        steps = [m.step for m in client.get_metric_history(food.run_id, f"{stem}/value")]
        assert 2 in steps and set(steps) <= {1, 2}
    both = [s for s in stems if len(client.get_metric_history(food.run_id, f"{s}/value")) == 2]
    assert both, "no top interaction of version 2 has a line from version 1"
    assert [m.step for m in client.get_metric_history(food.run_id, "faithfulness/heldout_r2")] == [1, 2]
    url = drift[food.run_id]
    assert url.endswith("/model-metrics?workflowType=machine_learning")
    # one section per interaction (its value, ci_low and ci_high charts) and one for faithfulness, named by
    # the keys' prefix; the UI opens the first sections, whose charts' legends name run and full key
    sections = [f">{stem}</div>" for stem in (*stems, "faithfulness")]
    dom = settled_dom(url, tmp_path, ["ui-features · food (", *sections])
    drawn = set(re.findall(r"ui-features · food \(([^)<]+)\)", dom))
    assert drawn and drawn <= set(client.get_run(food.run_id).data.metrics), drawn
    screenshot(url, tmp_path / "drift-charts.png")


def test_the_registry_page_states_the_verdict_of_each_spec(dashboard, links, tmp_path):
    (registry,) = find(links, "registry:")
    assert registry == tracking.model_version_url(dashboard.server, MODEL, "2")
    release = {spec["name"]: dashboard.outcome(spec["name"], "2") for spec in (FEATURES, HEADS)}
    expect = ["spex audits", "ui-features", "ui-heads", "tiny BERT, seed 3", "report.html",
              *(f'href="#/experiments/{o.mlflow_experiment_id}/runs/{o.mlflow_run_id}?workflowType=machine_learning"'
                for o in release.values())]
    dom = settled_dom(registry, tmp_path, expect)
    rows = [line for line in dom.split("<tr") if "ui-features" in line or "ui-heads" in line]
    assert len(rows) >= 2 and all("passed" in r for r in rows[:2])
    screenshot(registry, tmp_path / "registry-version.png")


def test_spex_ui_prints_the_drift_charts_of_an_audits_subjects(dashboard):
    from typer.testing import CliRunner

    from spex.cli import app

    release = dashboard.outcome("ui-features", "2")
    result = CliRunner().invoke(app, ["ui", release.audit_id[:12], "--db", dashboard.db_url,
                                      "--tracking-uri", dashboard.server])
    assert result.exit_code == 0, result.output
    tracker = tracking.AuditTracker(dashboard.server)
    for subject in ("food", "service"):
        (drift,) = tracker.drift_runs(MODEL, spec_key="ui-features", subject=subject)
        assert f"{MODEL} · ui-features · {subject}: " \
               f"{tracking.metric_charts_url(dashboard.server, drift.experiment_id, drift.run_id)}" in result.stdout
    assert tracking.model_version_url(dashboard.server, MODEL, "2") in result.stdout
    assert f"/runs/{release.mlflow_run_id}?workflowType=machine_learning" in result.stdout
    assert "ui-heads" not in result.stdout  # only this audit's spec
