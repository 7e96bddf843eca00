#!/usr/bin/env bash
# The production stack of infra/docker-compose.yml as local processes, for machines without Docker
# (CI, a laptop): Postgres (the one already running locally), an MLflow tracking server on Postgres
# with artifacts in a folder, a Prefect server on Postgres, a process work pool, a Prefect worker, and
# the deployments of prefect.yaml registered on the server.
#
#   infra/stack.sh start    start everything, wait until healthy, print where it is (exit 1: failed, cleaned up)
#   infra/stack.sh stop     stop everything this run dir started (process groups and their children)
#   infra/stack.sh status   one line per service; exit 0 all up, 1 some down, 3 nothing running
#   infra/stack.sh env      the client settings, as `export` lines: eval "$(infra/stack.sh env)"
#
# Configuration (environment; every name has a default):
#   SPEX_STACK_DIR          run dir: pids, logs, artifacts, data dir     (default: ~/.spex/stack)
#   SPEX_STACK_PYTHON       the Python with spex installed                (default: .venv/bin/python of the repo, else python3)
#   SPEX_STACK_PG_HOST / _PG_PORT / _PG_USER   the local Postgres        (default: 127.0.0.1 / 5432 / postgres;
#                           authentication is libpq's: trust, PGPASSWORD or ~/.pgpass — never a password in a URL)
#   SPEX_STACK_DB_SPEX / _DB_MLFLOW / _DB_PREFECT   database names, created if missing (default: spex / mlflow / prefect)
#   SPEX_STACK_MLFLOW_PORT / _PREFECT_PORT     ports on 127.0.0.1          (default: free ports chosen at start)
#   SPEX_STACK_WORK_POOL    the process work pool                         (default: spex)
#   SPEX_STACK_WORKER_LIMIT concurrent flow runs of the worker            (default: 1)
#   SPEX_STACK_THREADS      torch/BLAS threads of flow runs               (default: 1; an audit parallelises across processes)
#   SPEX_STACK_TIMEOUT      seconds to wait for each service              (default: 300)
#   SPEX_STACK_DATA_DIR     SPEX_DATA_DIR of the flow runs                (default: $SPEX_STACK_DIR/data)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${SPEX_STACK_DIR:-$HOME/.spex/stack}"
if [[ -n "${SPEX_STACK_PYTHON:-}" ]]; then PY="$SPEX_STACK_PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
PG_HOST="${SPEX_STACK_PG_HOST:-127.0.0.1}"
PG_PORT="${SPEX_STACK_PG_PORT:-5432}"
PG_USER="${SPEX_STACK_PG_USER:-postgres}"
DB_SPEX="${SPEX_STACK_DB_SPEX:-spex}"
DB_MLFLOW="${SPEX_STACK_DB_MLFLOW:-mlflow}"
DB_PREFECT="${SPEX_STACK_DB_PREFECT:-prefect}"
POOL="${SPEX_STACK_WORK_POOL:-spex}"
WORKER_LIMIT="${SPEX_STACK_WORKER_LIMIT:-1}"
THREADS="${SPEX_STACK_THREADS:-1}"
TIMEOUT="${SPEX_STACK_TIMEOUT:-300}"
SERVICES=(mlflow prefect-server worker)   # started in this order, stopped in reverse

log() { printf '[stack] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --------------------------------------------------------------------------------------- processes
# A service is a process group led by the pid in $RUN_DIR/pids/NAME.pid; the file also holds the
# leader's start time, so a pid the system reused for something else is never signalled.

start_time() { ps -o lstart= -p "$1" 2>/dev/null | tr -s ' ' || true; }

alive() {  # alive NAME: the recorded leader still runs (same pid, same start time)
  local file="$RUN_DIR/pids/$1.pid" pid started
  [[ -f "$file" ]] || return 1
  { read -r pid; read -r started; } <"$file" || return 1
  [[ -n "$pid" && -n "$started" && "$(start_time "$pid")" == "$started" ]]
}

launch() {  # launch NAME COMMAND...: run in its own process group, output to logs/NAME.log
  local name="$1"; shift
  set -m   # job control: the background job leads a new process group (pgid = its pid)
  "$@" >>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  set +m
  printf '%s\n%s\n' "$pid" "$(start_time "$pid")" >"$RUN_DIR/pids/$name.pid"
  log "$name started (pid $pid, log $RUN_DIR/logs/$name.log)"
}

descendants() {  # descendants PID: every process below PID (children may leave the group: Prefect isolates flow runs)
  ps -A -o pid= -o ppid= 2>/dev/null | awk -v root="$1" '
    { parent[$1] = $2 }
    END { found[root] = 1; changed = 1
          while (changed) { changed = 0
            for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; changed = 1 } }
          for (p in found) if (p != root) print p }'
}

stop_service() {  # stop_service NAME: TERM the group and its descendants, KILL what is left after 20 s
  local name="$1" file="$RUN_DIR/pids/$1.pid" pid
  [[ -f "$file" ]] || return 0
  if ! alive "$name"; then rm -f "$file"; return 0; fi
  pid="$(head -n1 "$file")"
  local others; others="$(descendants "$pid" | tr '\n' ' ')"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for p in $others; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 40); do
    local left=0
    kill -0 -- "-$pid" 2>/dev/null && left=1
    for p in $others; do kill -0 "$p" 2>/dev/null && left=1; done
    [[ $left == 0 ]] && break
    sleep 0.5
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  for p in $others; do kill -KILL "$p" 2>/dev/null || true; done
  rm -f "$file"
  log "$name stopped"
}

# --------------------------------------------------------------------------------------- checks
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

http_ok() {  # http_ok URL: a 2xx answer within 3 s
  if command -v curl >/dev/null 2>&1; then curl -fsS -o /dev/null --max-time 3 "$1" 2>/dev/null
  else "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" 2>/dev/null; fi
}

worker_online() {  # a worker of the pool has sent a heartbeat (the server marks it ONLINE)
  "$PY" - "$PREFECT_API_URL" "$POOL" <<'EOF' 2>/dev/null
import json, sys, urllib.request
api, pool = sys.argv[1], sys.argv[2]
request = urllib.request.Request(f"{api}/work_pools/{pool}/workers/filter", data=b"{}", method="POST",
                                 headers={"Content-Type": "application/json"})
workers = json.load(urllib.request.urlopen(request, timeout=3))
sys.exit(0 if any(w.get("status") == "ONLINE" for w in workers) else 1)
EOF
}

wait_for() {  # wait_for NAME DESCRIPTION CHECK...: poll CHECK until it passes; fail if NAME died or time ran out
  local name="$1" what="$2"; shift 2
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    alive "$name" || { tail -n 40 "$RUN_DIR/logs/$name.log" >&2 || true; die "$name exited before $what"; }
    (( SECONDS < deadline )) || { tail -n 40 "$RUN_DIR/logs/$name.log" >&2 || true; die "$name: no $what after ${TIMEOUT}s"; }
    sleep 1
  done
  log "$name: $what"
}

create_databases() {  # the three databases, created when missing (a concurrent creator is not an error)
  "$PY" - "$PG_HOST" "$PG_PORT" "$PG_USER" "$DB_SPEX" "$DB_MLFLOW" "$DB_PREFECT" <<'EOF'
import sys
import psycopg
from psycopg import errors, sql
host, port, user, *names = sys.argv[1:]
try:
    connection = psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True, connect_timeout=5)
except psycopg.OperationalError as exc:
    sys.exit(f"[stack] error: Postgres at {user}@{host}:{port} is unreachable: {str(exc).strip().splitlines()[0]}")
with connection:
    for name in names:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            continue
        try:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            print(f"[stack] database {name} created", file=sys.stderr)
        except errors.DuplicateDatabase:
            pass
EOF
}

# --------------------------------------------------------------------------------------- settings
write_env() {  # the settings every process of the stack (and a client pointed at it) uses
  local mlflow_port="$1" prefect_port="$2"
  cat >"$RUN_DIR/stack.env" <<EOF
export PREFECT_API_URL=http://127.0.0.1:$prefect_port/api
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
export SPEX_DATABASE_URL=postgresql+psycopg://$PG_USER@$PG_HOST:$PG_PORT/$DB_SPEX
export SPEX_STACK_MLFLOW_BACKEND=postgresql+psycopg://$PG_USER@$PG_HOST:$PG_PORT/$DB_MLFLOW
export SPEX_STACK_PREFECT_DATABASE=postgresql+asyncpg://$PG_USER@$PG_HOST:$PG_PORT/$DB_PREFECT
export SPEX_STACK_WORK_POOL=$POOL
EOF
}

common_env() {  # telemetry off, Prefect state of its own, one thread per flow run
  export DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false
  export PREFECT_HOME="$RUN_DIR/prefect-home"
  export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
  export TOKENIZERS_PARALLELISM=false
  # shellcheck disable=SC1091
  source "$RUN_DIR/stack.env"
}

# --------------------------------------------------------------------------------------- commands
cmd_start() {
  local name
  for name in "${SERVICES[@]}"; do alive "$name" && die "already running ($name; run dir $RUN_DIR): stop it first"; done
  mkdir -p "$RUN_DIR"/{pids,logs,mlartifacts,prefect-home}
  local data_dir="${SPEX_STACK_DATA_DIR:-$RUN_DIR/data}"
  mkdir -p "$data_dir"
  local mlflow_port="${SPEX_STACK_MLFLOW_PORT:-$(free_port)}" prefect_port="${SPEX_STACK_PREFECT_PORT:-$(free_port)}"
  [[ "$mlflow_port" != "$prefect_port" ]] || prefect_port="$(free_port)"
  write_env "$mlflow_port" "$prefect_port"
  common_env
  trap 'if [[ -z "${STARTED:-}" ]]; then log "start failed: stopping what was started"; cmd_stop; fi' EXIT
  create_databases

  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false launch mlflow \
    "$PY" -m mlflow server --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
    --backend-store-uri "$SPEX_STACK_MLFLOW_BACKEND" --serve-artifacts \
    --artifacts-destination "$RUN_DIR/mlartifacts"
  PREFECT_API_DATABASE_CONNECTION_URL="$SPEX_STACK_PREFECT_DATABASE" launch prefect-server \
    "$PY" -m prefect server start --host 127.0.0.1 --port "$prefect_port" --analytics-off
  wait_for prefect-server "API healthy at $PREFECT_API_URL" http_ok "$PREFECT_API_URL/health"

  # The pool first: `prefect deploy` refuses a pool that does not exist.
  "$PY" -m prefect work-pool inspect "$POOL" >/dev/null 2>&1 \
    || "$PY" -m prefect work-pool create "$POOL" --type process >>"$RUN_DIR/logs/deploy.log" 2>&1 \
    || { tail -n 20 "$RUN_DIR/logs/deploy.log" >&2; die "could not create the work pool $POOL"; }
  SPEX_DATA_DIR="$data_dir" PREFECT_WORKER_QUERY_SECONDS="${PREFECT_WORKER_QUERY_SECONDS:-2}" launch worker \
    "$PY" -m prefect worker start --pool "$POOL" --type process --limit "$WORKER_LIMIT" --name "spex-native-$$"
  wait_for mlflow "tracking server healthy at $MLFLOW_TRACKING_URI" http_ok "$MLFLOW_TRACKING_URI/health"

  log "registering the deployments of prefect.yaml on pool $POOL"
  (cd "$ROOT" && "$PY" -m prefect deploy --all --no-prompt --prefect-file "$ROOT/prefect.yaml" --pool "$POOL") \
    >>"$RUN_DIR/logs/deploy.log" 2>&1 || { tail -n 40 "$RUN_DIR/logs/deploy.log" >&2; die "prefect deploy failed"; }
  wait_for worker "worker online in pool $POOL" worker_online
  STARTED=1
  log "up: Prefect UI ${PREFECT_API_URL%/api}  MLflow $MLFLOW_TRACKING_URI  metadata $SPEX_DATABASE_URL"
  log "point a client at it: eval \"\$($0 env)\"   (SPEX_STACK_DIR=$RUN_DIR)"
}

cmd_stop() {
  local i
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_service "${SERVICES[$i]}"; done
}

cmd_status() {
  local name up=0 down=0
  if [[ -f "$RUN_DIR/stack.env" ]]; then
    # shellcheck disable=SC1091
    source "$RUN_DIR/stack.env"
  fi
  for name in "${SERVICES[@]}"; do
    local state="stopped"
    if alive "$name"; then
      state="running (pid $(head -n1 "$RUN_DIR/pids/$name.pid"))"
      case "$name" in
        mlflow) http_ok "$MLFLOW_TRACKING_URI/health" && state+=", healthy at $MLFLOW_TRACKING_URI" || state+=", not answering" ;;
        prefect-server) http_ok "$PREFECT_API_URL/health" && state+=", healthy at $PREFECT_API_URL" || state+=", not answering" ;;
        worker) worker_online && state+=", online in pool $POOL" || state+=", not online" ;;
      esac
    fi
    [[ "$state" == stopped ]] && down=$((down + 1)) || up=$((up + 1))
    printf '%-15s %s\n' "$name" "$state"
  done
  (( down == 0 )) && return 0
  (( up == 0 )) && return 3
  return 1
}

cmd_env() {
  [[ -f "$RUN_DIR/stack.env" ]] || die "no stack in $RUN_DIR (start it first)"
  grep -E '^export (PREFECT_API_URL|MLFLOW_TRACKING_URI|SPEX_DATABASE_URL)=' "$RUN_DIR/stack.env"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) sed -n '2,27p' "$0" >&2; exit 2 ;;
esac
