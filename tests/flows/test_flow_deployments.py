"""Deployments are defined in code: on-demand audit and release audit, and a nightly audit of the registry
alias ``champion``; entrypoints are module paths so a worker imports the installed package."""

from __future__ import annotations

import pytest


def test_the_nightly_champion_audit(monkeypatch: pytest.MonkeyPatch):
    from flows.deployments import deployments, nightly_champion

    monkeypatch.delenv("SPEX_NIGHTLY_MODEL", raising=False)
    by_name = {d.name: d for d in deployments()}
    assert set(by_name) == {"audit", "release", "nightly-champion-audit"}
    assert by_name["audit"].entrypoint == "flows.audit.audit" and not by_name["audit"].schedules
    assert by_name["release"].entrypoint == "flows.release.release_audit" and not by_name["release"].schedules
    deployment = by_name["nightly-champion-audit"]
    assert deployment.entrypoint == "flows.audit.audit"
    assert deployment.parameters["model"] == "models:/spex-demo-sentiment@champion"
    assert deployment.parameters["spec"]["lens"] == "heads" and deployment.parameters["spec"]["subjects"]
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *" and schedule.schedule.timezone == "UTC"
    assert "nightly" in deployment.tags

    monkeypatch.setenv("SPEX_NIGHTLY_MODEL", "fraud-scorer")
    other = nightly_champion(alias="prod", cron="30 3 * * 1-5", timezone="Europe/Berlin")
    assert other.parameters["model"] == "models:/fraud-scorer@prod"
    assert other.schedules[0].schedule.cron == "30 3 * * 1-5"
    assert other.schedules[0].schedule.timezone == "Europe/Berlin"
