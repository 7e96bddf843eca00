"""Where the ablation chunks of an audit run: in the flow's process (``local``, the default) or as Ray
tasks on a Ray cluster (``ray`` / ``ray=ADDRESS``) through prefect-ray's :class:`RayTaskRunner`.

    with open_runner("ray=127.0.0.1:6379") as chunks:      # or "ray": a temporary local cluster
        pending = chunks.submit(spec, subject_id, fingerprint, masks, store_root, "train", chunk_size)
        ...                                                   # submit more; all of them run concurrently
        values, stats = pending.gather()

How the Ray runner keeps the guarantees of the local one:

* **Every mask computed exactly once.** Before anything is submitted, the flow de-duplicates the
  requested masks, looks them up in the shared ablation store, and subtracts the masks already in flight
  for the same fingerprint (a subject's train and held-out sets may share masks). Only the remaining
  distinct masks are cut into chunks, so no two concurrent chunk tasks ever hold the same mask. A chunk
  task still looks its masks up in the store first (a retry recomputes nothing that was flushed).
  The guarantee holds within one flow run; two audits of the same fingerprint running at the same time
  may both compute a mask (the store keeps the first value; it is the same value).
* **Content-hash cache keys.** The chunk tasks are the same ``ablate`` task with the same cache key
  (fingerprint, mask content, store root), so Prefect's task cache works as before.
* **The model is loaded once per worker process.** A Ray worker process runs many chunk tasks; the model
  and the value functions live in :mod:`spex.audit.runtime`'s per-process cache. GPU tasks are submitted with
  ``max_calls=0``: Ray's default for GPU tasks (``max_calls=1``) would end the worker after each task
  and reload the model for every chunk.
* **One chunk task per GPU.** Each task asks Ray for ``num_gpus=1`` when the cluster has GPUs
  (``num_cpus=1`` and one torch thread on a CPU-only cluster), so Ray never runs two chunks on one
  accelerator. The machine's model slots (:func:`spex.ablation.slots.model_slot`, one per local accelerator)
  are not taken by Ray tasks: Ray's resource accounting does that job cluster-wide.

Worker processes must reach the same ablation store (a shared file system on a multi-node cluster),
import this project (it is installed on every node), and reach the Prefect API (the flow's
``PREFECT_API_URL``; with Prefect's ephemeral API, the flow process's temporary server on 127.0.0.1,
which only works for a cluster on the same machine).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spex.audit import progress, runtime
from spex.audit.ablate import (
    ChunkValues,
    InProcessAblation,
    InProcessPending,
    empty_stats,
)
from tasks.ablate import ablate
from tasks.runner_spec import (  # noqa: F401  (parse_runner: the flows' import)
    LOCAL,
    RAY,
    RunnerSpec,
    parse_runner,
)

# Environment every Ray worker gets (the telemetry of Ray, Prefect and MLflow off; no tokenizer threads).
_QUIET_WORKER_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}
# What the flow's process knows that a worker needs to load the same model the same way.
_FORWARDED_ENV = ("SPEX_DATA_DIR", "MLFLOW_TRACKING_URI", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                  "SPEX_FAULT_KILL_AT")


# ---------------------------------------------------------------------------------------------- local
@dataclass
class _LocalPending(InProcessPending):
    """A local runner's submission: computed when gathered, chunk after chunk, in this process, each
    chunk one ``ablate`` task run (so a cached chunk costs no look-up at all)."""

    refresh: bool = False
    done: int = 0
    progress_id: Any = None

    def measure(self, part: np.ndarray) -> tuple[ChunkValues, bool]:
        task = ablate.with_options(refresh_cache=True) if self.refresh else ablate
        state = task(self.spec, self.subject_id, self.fingerprint, part, self.store_root, self.role,
                     offset=self.done, return_state=True)
        self.done += len(part)
        self._show_progress()
        return state.result(), state.name == "Cached"

    def _show_progress(self) -> None:
        """A progress artifact per subject and role on the flow run, when the stage has several chunks."""
        if len(self.masks) <= self.chunk:
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        percent = 100.0 * self.done / len(self.masks)
        try:
            if self.progress_id is None:
                name = f"{self.spec.get('name') or 'spex'}-{self.subject_id}-{self.role}".lower()
                key = "".join(c if c.isalnum() else "-" for c in f"spex-ablation-{name}")[:200].strip("-")
                self.progress_id = create_progress_artifact(
                    percent, key=key, description=f"ablation of {self.subject_id} ({self.role}): "
                                                  f"{self.done} of {len(self.masks)} masks")
            else:
                update_progress_artifact(self.progress_id, percent)
        except Exception:  # noqa: BLE001  (the UI's progress must never stop an ablation)
            self.progress_id = self.progress_id or "unavailable"


class LocalChunks(InProcessAblation):
    """The default runner: the flow's own process runs the ablate task chunk by chunk, when a
    submission is gathered (nothing runs concurrently)."""

    spec = RunnerSpec(LOCAL)

    def submit(self, spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
               role: str, chunk: int, refresh: bool = False) -> _LocalPending:
        return _LocalPending(spec, subject_id, fingerprint, masks, store_root, role, chunk, refresh)


# ---------------------------------------------------------------------------------------------- ray
@dataclass
class _Chunk:
    """One submitted chunk task: its distinct masks (sorted keys for look-ups) and its future."""

    keys: np.ndarray                         # the chunk's mask keys, sorted
    order: np.ndarray                        # sorted position -> row of the chunk's masks
    future: Any
    owner: int
    result: ChunkValues | None = None
    cached: bool = False
    finished: bool = False                   # the Ray task is done (its result may not be collected yet)

    def values(self, runner: RayChunks) -> np.ndarray:
        if self.result is None:
            self.result = runner._collect(self)
        return self.result.values


@dataclass
class Pending:
    """The values of one request (a subject's masks of one role), being computed by Ray tasks."""

    runner: RayChunks
    request: int
    subject: str
    role: str
    masks: np.ndarray
    inverse: np.ndarray                      # row of ``masks`` -> row of the distinct masks
    values: np.ndarray                       # of the distinct masks; NaN until gathered
    sources: list[tuple[_Chunk, np.ndarray, np.ndarray]] = field(default_factory=list)  # (chunk, rows, positions)
    from_store: int = 0
    _done: tuple[np.ndarray, dict[str, Any]] | None = None

    def gather(self) -> tuple[np.ndarray, dict[str, Any]]:
        """(values in mask order, stats like the local path's: computed, from_store, chunks, ...)."""
        if self._done is not None:
            return self._done
        stats = {**empty_stats(), "from_store": self.from_store}
        for chunk, rows, positions in self.sources:
            first = chunk.result is None
            self.values[rows] = chunk.values(self.runner)[positions]
            if chunk.owner == self.request:
                stats["chunks"] += 1
                if chunk.cached:
                    stats["cached_chunks"] += 1
                    stats["from_store"] += len(rows)
                else:
                    part = chunk.result.stats  # type: ignore[union-attr]
                    stats["computed"] += int(part["computed"])
                    stats["from_store"] += int(part["from_store"])
                    stats["compute_seconds"] += float(part["compute_seconds"])
            else:  # computed by another request's chunk (a mask shared between roles)
                stats["from_store"] += len(rows)
            if first:
                progress.emit("masks", subject=self.subject, role=self.role, count=len(rows),
                             computed=not chunk.cached)
        if not np.all(np.isfinite(self.values)):
            raise RuntimeError(f"subject {self.subject!r}: {int((~np.isfinite(self.values)).sum())} masks have no "
                               f"value after ablation")
        self._done = (self.values[self.inverse], stats)
        return self._done


class RayChunks:
    """Chunk tasks on a Ray cluster through prefect-ray's ``RayTaskRunner`` (see the module docstring)."""

    concurrent = True

    def __init__(self, spec: RunnerSpec) -> None:
        self.spec = spec
        self.task_runner: Any = None
        self.remote_options: dict[str, Any] = {}
        self.threads: int | None = None
        self.slots = 1                      # chunk tasks the cluster runs at once
        self.resources: dict[str, float] = {}
        self.workers: dict[str, dict[str, Any]] = {}
        self._inflight: dict[str, list[_Chunk]] = {}
        self._requests = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RayChunks:
        from spex.errors import SpexInputError

        for key, value in _QUIET_WORKER_ENV.items():  # read by ray.init when it starts a local cluster
            os.environ.setdefault(key, value)
        try:
            import ray
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise SpexInputError(f"--runner ray needs ray and prefect-ray ({exc.name} is not installed); fix: "
                                 f"pip install -e . (they are pinned in pyproject.toml)") from None
        init_kwargs: dict[str, Any] = {"log_to_driver": False}
        if not self.spec.address and not os.environ.get("RAY_ADDRESS"):
            init_kwargs["include_dashboard"] = False  # a temporary local cluster: no dashboard
        elif not ray.is_initialized():
            _token_auth_if_token_available()
        self.task_runner = RayTaskRunner(address=self.spec.address, init_kwargs=init_kwargs)
        try:
            self.task_runner.__enter__()
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            raise SpexInputError(f"cannot reach the Ray cluster {self.spec.address or '(local)'}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; fix: start it "
                                 f"(ray start --head) or give its address with --runner ray=HOST:PORT") from None
        self.resources = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        from spex import settings

        threads = settings.current().ray_threads
        if self.resources.get("GPU", 0) >= 1:
            # one chunk task per GPU; the worker process stays (max_calls=0) so its model stays loaded
            self.remote_options = {"num_gpus": 1, "num_cpus": threads, "max_calls": 0}
        else:
            self.remote_options = {"num_cpus": threads, "max_calls": 0}
        self.threads = threads
        gpus, cpus = int(self.resources.get("GPU", 0)), int(self.resources.get("CPU", 1))
        self.slots = max(1, gpus if gpus >= 1 else cpus // max(1, threads))
        return self

    def __exit__(self, *exc: object) -> None:
        runner, self.task_runner = self.task_runner, None
        if runner is not None:
            runner.__exit__(*exc)  # shuts down the cluster only if this runner started it

    def describe(self) -> dict[str, Any]:
        return {"runner": str(self.spec), "cluster": self.resources, "slots": self.slots, "task_resources": {
            k: v for k, v in self.remote_options.items() if k != "max_calls"}, "workers": self.worker_summary()}

    def worker_summary(self) -> dict[str, Any]:
        """Worker processes that ran chunk tasks, the models each loaded (over its life) and masks computed."""
        with self._lock:
            return {"processes": len(self.workers),
                    "model_loads": sum(w["model_loads"] for w in self.workers.values()),
                    "max_model_loads_per_process": max((w["model_loads"] for w in self.workers.values()), default=0),
                    "computed": sum(w["computed"] for w in self.workers.values()),
                    "by_process": {k: dict(v) for k, v in self.workers.items()}}

    def running(self) -> int:
        """Chunk tasks submitted and not finished yet (the flow submits ahead while this is low)."""
        import ray

        with self._lock:
            refs = [c.future.wrapped_future for chunks in self._inflight.values() for c in chunks
                    if c.result is None and not c.finished]
        if not refs:
            return 0
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done = {r.hex() for r in ready}
        with self._lock:
            for chunks in self._inflight.values():
                for c in chunks:
                    if c.result is None and c.future.wrapped_future.hex() in done:
                        c.finished = True
        return len(refs) - len(ready)

    # ------------------------------------------------------------------ submitting
    def _env(self) -> dict[str, str]:
        env = dict(_QUIET_WORKER_ENV)
        for key in _FORWARDED_ENV:
            if os.environ.get(key):
                env[key] = os.environ[key]
        from spex import settings

        env["SPEX_DATA_DIR"] = str(settings.data_dir())
        return env

    @contextmanager
    def _api(self) -> Iterator[None]:
        """Submissions carry the flow's settings to the workers; with Prefect's ephemeral API that must
        name the flow process's temporary server, or each worker would start a server of its own."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        if PREFECT_API_URL.value():
            yield
            return
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start()  # no-op when the flow's client already started it
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield

    def submit(self, spec: dict[str, Any], subject_id: str, fingerprint: str, masks: np.ndarray, store_root: str,
               role: str, chunk: int, refresh: bool = False) -> Pending:
        """Submit the chunk tasks for ``masks`` (only distinct masks neither stored nor in flight) and return
        at once; :meth:`Pending.gather` waits for the values."""
        from prefect_ray.context import remote_options

        from spex.engine.maskbits import mask_keys, unique_rows

        if self.task_runner is None:
            raise RuntimeError("the Ray runner is not started (use it as a context manager)")
        masks = np.asarray(masks, dtype=bool)
        with self._lock:
            self._requests += 1
            request = self._requests
        if len(masks) == 0:
            return Pending(self, request, subject_id, role, masks, np.zeros(0, dtype=np.intp), np.zeros(0))
        distinct, inverse = unique_rows(masks)
        store = runtime.ablation_store(store_root)
        values, found = store.lookup(fingerprint, distinct)
        pending = Pending(self, request, subject_id, role, masks, inverse, values, from_store=int(found.sum()))
        if found.any():
            progress.emit("masks", subject=subject_id, role=role, count=int(found.sum()), computed=False)
        todo = np.flatnonzero(~found)
        keys = mask_keys(distinct[todo]) if len(todo) else np.zeros(0)
        task = ablate.with_options(refresh_cache=True) if refresh else ablate
        with self._lock:
            inflight = self._inflight.setdefault(f"{store_root}|{fingerprint}", [])
            taken = np.zeros(len(todo), dtype=bool)
            for other in inflight:  # masks another request already submitted: wait for its chunk
                if len(todo) == 0 or taken.all():
                    break
                pos = np.searchsorted(other.keys, keys)
                inside = pos < len(other.keys)
                hit = np.zeros(len(todo), dtype=bool)
                hit[inside] = other.keys[pos[inside]] == keys[inside]
                hit &= ~taken
                if hit.any():
                    pending.sources.append((other, todo[hit], other.order[pos[hit]]))
                    taken |= hit
            rest = todo[~taken]
            if len(rest):
                with self._api(), remote_options(runtime_env={"env_vars": self._env()}, **self.remote_options):
                    for lo in range(0, len(rest), chunk):
                        rows = rest[lo:lo + chunk]
                        part = distinct[rows]
                        part_keys = mask_keys(part)
                        order = np.argsort(part_keys, kind="stable")
                        parameters = {"spec": spec, "subject_id": subject_id, "fingerprint": fingerprint,
                                      "masks": part, "store_root": store_root, "role": role,
                                      "limit": False, "threads": self.threads}
                        future = self.task_runner.submit(task, parameters)
                        submitted = _Chunk(part_keys[order], order, future, request)
                        inflight.append(submitted)
                        pending.sources.append((submitted, rows, np.arange(len(rows))))
        return pending

    def _collect(self, chunk: _Chunk) -> ChunkValues:
        """Wait for a chunk task; its values and the worker it ran on."""
        future = chunk.future
        future.wait()
        state = future.state
        result = future.result()
        chunk.cached = state.name == "Cached"
        if not chunk.cached:
            worker = result.stats.get("worker") or {}
            name = f"{worker.get('host', '?')}:{worker.get('pid', '?')}"
            with self._lock:
                entry = self.workers.setdefault(name, {"model_loads": 0, "value_functions": 0, "chunks": 0,
                                                       "computed": 0})
                entry["model_loads"] = max(entry["model_loads"], int(worker.get("model_loads", 0)))
                entry["value_functions"] = max(entry["value_functions"], int(worker.get("value_functions", 0)))
                entry["chunks"] += 1
                entry["computed"] += int(result.stats["computed"])
        return result


# ---------------------------------------------------------------------------------------------- opening
_ACTIVE: list[RayChunks] = []
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def open_runner(runner: str | RunnerSpec | None) -> Iterator[LocalChunks | RayChunks]:
    """The chunk runner for ``runner``, started for the duration of the block. Re-entrant: an audit inside
    a release audit reuses the release's Ray connection (a cluster is started once per flow run)."""
    spec = parse_runner(runner)
    if spec.kind == LOCAL:
        yield LocalChunks()
        return
    with _ACTIVE_LOCK:
        active = next((r for r in _ACTIVE if r.spec == spec and r.task_runner is not None), None)
    if active is not None:
        yield active
        return
    chunks = RayChunks(spec)
    with chunks:
        with _ACTIVE_LOCK:
            _ACTIVE.append(chunks)
        try:
            yield chunks
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.remove(chunks)


def _token_auth_if_token_available() -> None:
    """Ray 2.60 clusters use token authentication by default, but a driver connecting by address sends
    its token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) only in token mode,
    which ``ray.init`` does not switch on by itself for a connection. Do what Ray does for a local
    cluster: token mode when a token is there and ``RAY_AUTH_MODE`` is unset (it is respected if set)."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)

