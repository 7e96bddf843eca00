"""Who owns a running audit, and when that owner is gone (what lets the next audit mark a killed
one failed instead of leaving it ``running`` for ever)."""

from __future__ import annotations

import subprocess
import sys

from spex.audit import owners


def test_this_process_is_not_gone():
    assert not owners.owner_gone(owners.process_owner())


def test_an_exited_process_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    owner = {**owners.process_owner(), "pid": child.pid}
    assert owners.owner_gone(owner)


def test_a_reused_pid_is_gone():
    owner = owners.process_owner()
    assert owner["start"] is not None  # Linux: the start time names the process
    assert owners.owner_gone({**owner, "start": owner["start"] - 1})


def test_another_machine_is_never_judged():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not owners.owner_gone({"host": "some-other-host", "pid": child.pid, "start": 1})
    assert not owners.owner_gone({"host": owners.process_owner()["host"]})  # no pid recorded
