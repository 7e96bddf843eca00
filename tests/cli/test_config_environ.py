"""spex.settings.scoped_environ: settings handed to a run through the environment are put back exactly."""

from __future__ import annotations

import os

import pytest

from spex.settings import scoped_environ


def test_sets_unsets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEX_T_KEEP", "before")
    monkeypatch.delenv("SPEX_T_NEW", raising=False)
    with scoped_environ({"SPEX_T_KEEP": None, "SPEX_T_NEW": "during"}):
        assert "SPEX_T_KEEP" not in os.environ and os.environ["SPEX_T_NEW"] == "during"
    assert os.environ["SPEX_T_KEEP"] == "before" and "SPEX_T_NEW" not in os.environ


def test_restores_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEX_T_KEEP", "before")
    with pytest.raises(RuntimeError), scoped_environ({"SPEX_T_KEEP": "during"}):
        raise RuntimeError("boom")
    assert os.environ["SPEX_T_KEEP"] == "before"
