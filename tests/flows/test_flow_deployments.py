"""The scheduled deployment is defined in code: a nightly audit of the registry alias ``champion``."""

from __future__ import annotations

import pytest


def test_the_nightly_champion_audit(monkeypatch: pytest.MonkeyPatch):
    from flows.deployments import deployments, nightly_champion

    monkeypatch.delenv("SPEX_NIGHTLY_MODEL", raising=False)
    (deployment,) = deployments()
    assert deployment.name == "nightly-champion-audit"
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
