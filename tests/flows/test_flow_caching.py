"""Cache keys are content hashes of exactly the inputs that determine a stage's output, and only
transient failures are retried."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np

from spex.audit.spec import SpecError
from spex.content import content_hash
from tasks.caching import is_transient, key_on


def test_cache_keys_hash_content_not_identity():
    key = key_on("fingerprint", "masks", "store_root")
    context = SimpleNamespace(task=SimpleNamespace(name="ablate"))
    masks = np.random.default_rng(0).random((50, 12)) < 0.5
    base = {"fingerprint": "f" * 32, "masks": masks, "store_root": "/data/ablations", "spec": {"name": "a"}}
    same = {**base, "masks": masks.copy(), "spec": {"name": "another name, same work"}}
    assert key(context, base) == key(context, same)  # parameters outside the key do not matter
    flipped = masks.copy()
    flipped[3, 4] ^= True
    assert key(context, {**base, "masks": flipped}) != key(context, base)
    assert key(context, {**base, "store_root": "/elsewhere"}) != key(context, base)
    assert key(context, {**base, "fingerprint": "e" * 32}) != key(context, base)
    other_task = SimpleNamespace(task=SimpleNamespace(name="fit"))
    assert key(other_task, base) != key(context, base)
    assert content_hash(np.arange(4.0)) == content_hash(np.arange(4.0)) != content_hash(np.arange(5.0))


def _failed(exc: BaseException):
    from prefect.states import exception_to_failed_state

    async def make():
        try:
            raise exc
        except BaseException as raised:  # noqa: BLE001
            return await exception_to_failed_state(raised)

    return asyncio.run(make())


def test_only_transient_failures_are_retried():
    assert is_transient(None, None, _failed(OSError("disk hiccup")))
    assert is_transient(None, None, _failed(ConnectionError("database restarting")))
    assert not is_transient(None, None, _failed(SpecError("spec field `budget`: ...")))
    assert not is_transient(None, None, _failed(ValueError("bad value")))


def test_cache_keys_read_fields_of_typed_stage_inputs():
    from spex.audit.plan import SubjectPlan

    key = key_on("plan.fingerprint", "plan.budget", "masks")
    context = SimpleNamespace(task=SimpleNamespace(name="fit"))
    plan = SubjectPlan(id="food", digest="d" * 32, fingerprint="f" * 32, n=12, labels=[f"w{i}" for i in range(12)],
                       full_value=0.5, target="positive", view={}, describe={}, budget=120)
    masks = np.random.default_rng(1).random((30, 12)) < 0.5
    base = {"plan": plan, "masks": masks}
    renamed = SubjectPlan.of(SubjectPlan(**{**plan.__dict__, "id": "same work, another id"}), 120)
    assert key(context, base) == key(context, {"plan": renamed, "masks": masks.copy()})
    assert key(context, base) != key(context, {**base, "plan": SubjectPlan.of(plan, 90)})
    assert key(context, base) != key(context, {**base, "plan": SubjectPlan.of(
        SubjectPlan(**{**plan.__dict__, "fingerprint": "e" * 32}), 120)})
