"""The Ray runner (``runner="ray"`` / ``"ray=ADDRESS"``) on a real local Ray cluster with 2 CPUs: the same
audit as the single-process runner (same masks, same values, same interactions), every mask computed
exactly once (counted in the ablation store's chunk files and by the engines' own counters in the
workers, not read from logs), the model loaded once per worker process, and a rerun that computes
nothing. Both forms are exercised: a cluster started in this process (``ray.init``; the runner reuses
it) and a separate ``ray start --head`` cluster reached by its address (a release audit, both legs).

Ray starts in a few seconds but not for free: one cluster per test class.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray  # noqa: F401,E402  pinned in pyproject.toml: a missing ray fails the suite, never skips it

from tests.flows.flow_models import features_spec
from tests.tolerances import assert_close

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")


def _spec(model: Path, **overrides: object) -> dict:
    # small chunks: each subject's masks become many concurrent chunk tasks
    return features_spec(model, batch={"max_batch": 16, "chunk_size": 16}, **overrides)


def _run(monkeypatch: pytest.MonkeyPatch, data: Path, flow, *args, **kwargs) -> dict:
    """Run a flow with its own data dir (so its ablation store starts empty) and SQLite metadata DB."""
    data.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("SPEX_DATA_DIR", str(data))
    return flow(*args, db_url=f"sqlite:///{data / 'meta.db'}", **kwargs)


def _chunk_rows(store, fingerprint: str) -> int:
    """Masks written over all chunk files of a fingerprint, duplicates included (a mask computed by two
    processes would be written by both: their in-memory indexes cannot see each other's chunk in flight)."""
    from spex.ablation.store import CHUNK_SUFFIX, _decode_chunk

    rows = 0
    for path in store.path(fingerprint).glob(f"*{CHUNK_SUFFIX}"):
        _, keys, _ = _decode_chunk(path.read_bytes())
        rows += len(keys)
    return rows


def _store_contents(data: Path, db_url: str, audit_id: str) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """subject -> (fingerprint, stored masks, stored values) of one audit, read back from disk."""
    from spex.ablation import AblationStore
    from spex.records.metadata import MetadataStore

    store = AblationStore(data / "ablations")
    out = {}
    with MetadataStore(db_url) as meta:
        for s in meta.get_audit(audit_id).subjects:
            (fp,) = {a.fingerprint for a in s.ablation_sets}
            masks, values = store.load(fp)
            out[s.subject.key] = (fp, masks, values)
    return out


@pytest.fixture(scope="class")
def ray_in_process() -> Iterator[None]:
    """A local Ray cluster with 2 CPUs started in this process; ``runner="ray"`` reuses it."""

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


class TestInProcessCluster:
    def test_same_audit_as_local_and_each_mask_computed_once(self, flow_env, bert_v1, tmp_path, monkeypatch,
                                                              ray_in_process):
        from flows.audit import audit
        from spex.ablation import AblationStore

        spec = _spec(bert_v1)
        local = _run(monkeypatch, tmp_path / "local", audit, spec)
        ray_run = _run(monkeypatch, tmp_path / "ray", audit, spec, runner="ray")
        assert local.runner == {"runner": "local"}
        assert ray_run.runner["runner"] == "ray" and ray_run.runner["cluster"]["CPU"] == 2.0
        assert ray_run.runner["task_resources"] == {"num_cpus": 1}  # no GPU here: one CPU slot per task

        print("seconds: local", local.seconds, "ray", ray_run.seconds)
        # --- identical results: rankings, values, held-out R², removal. "Identical" up to float32 rounding:
        # a mask's value depends (at ~1e-7) on which other masks share its padded batch, and the Ray runner
        # cuts chunks from the distinct masks not yet stored, so a few batches differ from the local run's.
        assert set(local.subjects) == set(ray_run.subjects) == {"food", "movie"}
        for sid, a in local.subjects.items():
            b = ray_run.subjects[sid]
            assert [r["members"] for r in a.ranking] == [r["members"] for r in b.ranking]
            assert_close([r["value"] for r in a.ranking], [r["value"] for r in b.ranking])
            assert a.heldout_r2 == pytest.approx(b.heldout_r2, abs=1e-5)
            assert [c["features"] for c in a.removal["choices"]] == [c["features"] for c in b.removal["choices"]]

        # --- the same masks stored with the same values
        stored_local = _store_contents(tmp_path / "local", f"sqlite:///{tmp_path / 'local' / 'meta.db'}",
                                       local.audit_id)
        stored_ray = _store_contents(tmp_path / "ray", f"sqlite:///{tmp_path / 'ray' / 'meta.db'}",
                                     ray_run.audit_id)
        computed_by_tasks = 0
        for sid, (fp, masks, values) in stored_local.items():
            fp_ray, masks_ray, values_ray = stored_ray[sid]
            assert fp_ray == fp
            np.testing.assert_array_equal(masks_ray, masks)  # load() returns masks in a fixed (sorted) order
            assert_close(values_ray, values)
            print(sid, "max |ray - local| value difference", float(np.abs(values_ray - values).max()))

            # --- every mask computed exactly once: as many rows in the chunk files as distinct masks, and the
            # workers' engines computed exactly the distinct masks (their counters come back with each chunk)
            store = AblationStore(tmp_path / "ray" / "ablations")
            assert _chunk_rows(store, fp) == store.count(fp) == len(masks_ray)
            assert store.stats(fp).conflicts == 0
            stats = ray_run.subjects[sid].stats
            assert stats["computed"] == len(masks_ray)
            computed_by_tasks += stats["computed"]
            assert stats["chunks"] >= len(masks_ray) // 16  # really cut into concurrent chunk tasks
        workers = ray_run.runner["workers"]
        assert workers["computed"] == computed_by_tasks == ray_run.model_calls["masks_computed"]
        # --- each worker process loaded the model once, however many chunks it ran
        assert 1 <= workers["processes"] <= 2 + 1  # Ray may start a spare worker; at most 2 run at once
        assert workers["max_model_loads_per_process"] == 1
        assert sum(w["chunks"] for w in workers["by_process"].values()) > workers["processes"]

        # --- a rerun through the CLI (`spex audit --runner ray`) computes nothing and submits no chunk task
        import yaml

        spec_path = tmp_path / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        monkeypatch.setenv("SPEX_DATA_DIR", str(tmp_path / "ray"))
        out = _cli("audit", str(spec_path), "--runner", "ray", "--json", "--db",
                   f"sqlite:///{tmp_path / 'ray' / 'meta.db'}")
        assert out.exit_code == 0, out.output
        again = json.loads(out.stdout)
        assert again["runner"]["runner"] == "ray" and again["model_calls"]["masks_computed"] == 0
        assert all(s["stats"]["chunks"] == 0 and s["stats"]["computed"] == 0 for s in again["subjects"].values())
        assert [r["members"] for r in again["subjects"]["food"]["top"]] == \
            [r["members"] for r in ray_run.subjects["food"].ranking[:5]]


def _cli(*args: str):
    from typer.testing import CliRunner

    from flows.cli import QUIET_ENV, app

    # the CLI quiets libraries through the environment: restore it after each call
    return CliRunner().invoke(app, list(args), env={k: os.environ.get(k) for k in QUIET_ENV})


def test_a_bad_runner_is_exit_2_before_anything_starts(flow_env, bert_v1, tmp_path, monkeypatch):
    import yaml

    from flows.audit import audit
    from spex.errors import SpexInputError

    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(_spec(bert_v1)))
    result = _cli("audit", str(spec_path), "--runner", "dask", "--db", f"sqlite:///{tmp_path / 'meta.db'}")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown runner 'dask'" in lines[0] and "fix:" in lines[0]
    assert not (tmp_path / "meta.db").exists()  # nothing was recorded
    with pytest.raises(SpexInputError, match="needs an address"):  # the flow parameter is checked too
        _run(monkeypatch, tmp_path / "bad", audit, _spec(bert_v1), runner="ray=")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="class")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A separate 2-CPU Ray cluster (``ray start --head --block``), stopped by its own process id."""

    assert not ray.is_initialized()
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray-head")
    ray_cli = Path(sys.executable).with_name("ray")
    # Ray 2.60 clusters require a token (~/.ray/auth_token, created by the first cluster on the machine);
    # the runner connects in token mode when a token is there (tasks.runners._token_auth_if_token_available)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, "ray start --head exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not open its port in 90 s")
        yield address
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started when it is terminated
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


class TestClusterByAddress:
    def test_release_audit_on_a_cluster_by_address(self, flow_env, registered, tmp_path, monkeypatch, ray_head):
        from flows.release import release_audit
        from spex import settings
        from spex.ablation import AblationStore

        # the registered models live in the package's MLflow store: keep pointing at it (the workers get
        # MLFLOW_TRACKING_URI from the flow) while the audit writes into a data dir of its own
        monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri())
        spec = {**_spec("models:/tiny-sentiment@candidate"), "baseline": "models:/tiny-sentiment@champion",
                "gates": {"faithfulness_min": -1.0}}
        spec["subjects"] = spec["subjects"][:1]
        data = tmp_path / "cluster"
        result = _run(monkeypatch, data, release_audit, spec, runner=f"ray={ray_head}")
        base = result.baseline
        assert result.kind == "release" and base.kind == "audit"
        assert result.runner["runner"] == base.runner["runner"] == f"ray={ray_head}"
        store = AblationStore(data / "ablations")
        for leg in (base, result):  # each leg: every distinct mask computed once, by the workers
            (fp, masks, _), = _store_contents(data, f"sqlite:///{data / 'meta.db'}", leg.audit_id).values()
            assert _chunk_rows(store, fp) == store.count(fp) == len(masks) == leg.model_calls["masks_computed"]
        # one Ray connection for both legs: the summary at the end counts both legs' chunks
        assert base.runner["workers"]["computed"] == base.model_calls["masks_computed"]
        workers = result.runner["workers"]
        assert workers["computed"] == base.model_calls["masks_computed"] + result.model_calls["masks_computed"]
        # two models (baseline, candidate): a worker process loads each at most once
        assert 1 <= workers["max_model_loads_per_process"] <= 2
