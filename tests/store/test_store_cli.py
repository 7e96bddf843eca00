"""The CLI read paths (``spex db``, ``spex audits list/show``, ``spex interactions``) on both
backends, through Typer's CliRunner; errors are one line on stderr with exit status 2."""

from __future__ import annotations

import json

import pytest
from store_scenarios import interaction_table, record_audit
from typer.testing import CliRunner

from spex.cli import app
from spex.records.metadata import MetadataStore, ModelRef

V1 = ModelRef("sentiment", "rev-1")
V2 = ModelRef("sentiment", "rev-2", registry_version="2")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def recorded(db_url):
    with MetadataStore(db_url) as store:
        record_audit(store, "aaaa1111-v1", model=V1, seed=1)
        record_audit(store, "bbbb2222-v2", model=V2, seed=2)
        store.start_audit(V2, {"budget": 10}, audit_id="cccc3333-broken")
        store.fail_audit("cccc3333-broken", RuntimeError("CUDA out of memory at postgresql://u:pw@h/db"))
    return db_url


def _run(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def test_db_upgrade_current_downgrade(runner, db_url):
    result = _run(runner, "db", "current", "--db", db_url)
    assert result.exit_code == 0 and "at revision base (head: 0002_uncertainty_and_verdicts)" in result.stdout
    result = _run(runner, "db", "upgrade", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "at revision 0002_uncertainty_and_verdicts" in result.stdout
    result = _run(runner, "db", "downgrade", "base", "--db", db_url)
    assert result.exit_code == 0 and "at revision base" in result.stdout
    result = _run(runner, "db", "upgrade", "--db", db_url)
    assert result.exit_code == 0 and "at revision 0002_uncertainty_and_verdicts" in result.stdout


def test_database_url_from_the_environment(runner, recorded):
    result = runner.invoke(app, ["audits", "list", "--json"], env={"SPEX_DATABASE_URL": recorded})
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 3


def test_audits_list(runner, recorded):
    result = _run(runner, "audits", "list", "--db", recorded)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "model", "revision", "status"]
    assert [line.split()[0] for line in lines[1:]] == ["cccc3333-bro", "bbbb2222-v2", "aaaa1111-v1"]

    result = _run(runner, "audits", "list", "--db", recorded, "--status", "failed", "--json")
    rows = json.loads(result.stdout)
    assert [r["id"] for r in rows] == ["cccc3333-broken"]
    assert rows[0]["error"] == "RuntimeError: CUDA out of memory at postgresql://u:***@h/db"

    result = _run(runner, "audits", "list", "--db", recorded, "--model", "sentiment", "--status", "succeeded", "--json")
    assert [r["id"] for r in json.loads(result.stdout)] == ["bbbb2222-v2", "aaaa1111-v1"]
    result = _run(runner, "audits", "list", "--db", recorded, "--model", "nope")
    assert result.exit_code == 0 and result.stdout.strip() == "no audits of model nope"


def test_audits_show(runner, recorded):
    result = _run(runner, "audits", "show", "bbbb", "--db", recorded)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "bbbb2222-v2" in out and "sentiment @ rev-2" in out and "registry v2" in out
    assert "succeeded" in out and "pass" in out and "min_heldout_r2" in out
    for key in ("s0", "s1"):
        assert f"run-bbbb2222-v2-{key}" in out
    assert f"fbii: {len(interaction_table(2 + 2))}" in out

    data = json.loads(_run(runner, "audits", "show", "bbbb2222-v2", "--db", recorded, "--json").stdout)
    assert data["id"] == "bbbb2222-v2" and len(data["subjects"]) == 2 and len(data["gates"]) == 2
    assert data["min_heldout_r2"] == min(s["validation"]["heldout_r2"] for s in data["subjects"])

    broken = _run(runner, "audits", "show", "cccc3333-broken", "--db", recorded)
    assert broken.exit_code == 0 and "RuntimeError: CUDA out of memory" in broken.stdout and ":pw@" not in broken.stdout


def test_interactions_across_versions(runner, recorded):
    result = _run(runner, "interactions", "--model", "sentiment", "--subject", "s0", "--top", "3", "--db", recorded)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "sentiment · subject s0 · index fbii · top 3"
    assert lines[1].split() == ["rev-1", "rev-2"]
    assert lines[2].split() == ["interaction", "aaaa1111", "bbbb2222"]
    top_v2 = interaction_table(2 + 2).iloc[0]
    assert lines[3].startswith(" × ".join(top_v2["labels"]))  # newest version's top interaction first
    assert "(#1)" in lines[3]

    long = _run(runner, "interactions", "-m", "sentiment", "-s", "s0", "-k", "2", "--long", "--db", recorded)
    assert long.exit_code == 0 and len(long.stdout.splitlines()) == 2 + 2 * 2

    data = json.loads(_run(runner, "interactions", "-m", "sentiment", "-s", "s0", "-k", "2", "--json", "--db", recorded).stdout)
    assert data["index"] == "fbii" and [r["audit_id"] for r in data["rows"]] == ["aaaa1111-v1"] * 2 + ["bbbb2222-v2"] * 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["audits", "show", "zzzz"], "error: no audit 'zzzz'"),
        (["audits", "list", "--status", "done"], "error: status must be one of running, succeeded, failed, got 'done'"),
        (["interactions", "--model", "sentiment", "--subject", "nope"], "error: no subject 'nope'"),
        (["interactions", "--model", "other", "--subject", "s0"],
         "error: no succeeded audit of model 'other' recorded interactions for subject 's0'"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(runner, recorded, args, message):
    result = _run(runner, *args, "--db", recorded)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert result.stdout == ""


def test_unreachable_database_masks_the_password(runner):
    result = _run(runner, "audits", "list", "--db", "postgresql+psycopg://spex:hunter2@127.0.0.1:1/spex")
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.output and "spex:***@127.0.0.1:1/spex" in result.stderr
    result = _run(runner, "audits", "list", "--db", "mysql://root:hunter2@localhost/x")
    assert result.exit_code == 2 and "hunter2" not in result.output and "unsupported database backend" in result.stderr
