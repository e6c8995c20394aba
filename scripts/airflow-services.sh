#!/usr/bin/env bash
# Run Airflow's four services natively (metadata DB on the local PostgreSQL); with DRP_EXECUTOR=celery
# also one Celery worker per site queue (drp-campaign worker --queue Q), broker the local Redis.
#   scripts/airflow-services.sh start   create/migrate the DB if needed, start, wait until healthy
#   scripts/airflow-services.sh stop    stop every service this script started (by pid)
#   scripts/airflow-services.sh status
# Each service runs in its own session (setsid) with its pid kept, so stop reaches all of it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/service-lib.sh"
PIDS="$AIRFLOW_HOME/pids" LOGS="$AIRFLOW_HOME/logs/services"
SERVICES=(api-server scheduler dag-processor triggerer)
if [ "$DRP_EXECUTOR" = celery ]; then
  for queue in $(python -c 'from drp_campaign.config import load_sites; from drp_campaign.workers import site_queues
print(*site_queues(load_sites()))'); do SERVICES+=("worker-$queue"); done
fi

# How each service starts: Airflow's own, or a site's Celery worker on its queue only.
command_of() {
  case "$1" in
    worker-*) echo drp-campaign worker --queue "${1#worker-}" ;;
    *) echo airflow "$1" ;;
  esac
}

prepare() {
  mkdir -p "$PIDS" "$LOGS" "$AIRFLOW__CORE__PLUGINS_FOLDER"
  chmod 700 "$AIRFLOW_HOME"   # the JWT secret and the users' passwords live here: this user's only
  # One JWT secret for all components (they sign and check each other's tokens): whoever reads it
  # can sign an admin token for the API.
  [ -s "$AIRFLOW_HOME/jwt_secret" ] || (umask 077 && head -c 64 /dev/urandom | base64 -w0 > "$AIRFLOW_HOME/jwt_secret")
  chmod 600 "$AIRFLOW_HOME/jwt_secret"
  # The UI and API logins: the users and roles of env.sh (admin, operator, viewer), each with a
  # password generated once for this machine, in a 0600 file (README: "Users and roles").
  python -c 'import os; from drp_campaign.airflow_client import ensure_passwords as e
e(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])'
  if ! psql -h "$DRP_PG_HOST" -p "$DRP_AIRFLOW_DB_PORT" -U "$DRP_PG_USER" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DRP_AIRFLOW_DB'" | grep -q 1; then
    psql -h "$DRP_PG_HOST" -p "$DRP_AIRFLOW_DB_PORT" -U "$DRP_PG_USER" -d postgres -qc "CREATE DATABASE \"$DRP_AIRFLOW_DB\""
    echo "created database $DRP_AIRFLOW_DB"
  fi
  local t0=$SECONDS
  airflow db migrate >"$LOGS/db-migrate.log" 2>&1 || { tail -20 "$LOGS/db-migrate.log" >&2; echo "error: airflow db migrate failed (log: $LOGS/db-migrate.log)" >&2; exit 1; }
  echo "metadata DB $DRP_AIRFLOW_DB migrated in $((SECONDS - t0)) s"
  connect_rucio
}

# The Airflow Connection the Rucio hook reads (credentials live there, not in code or YAML),
# made from what scripts/rucio-server.sh wrote for the local Rucio.
connect_rucio() {
  local info="$DRP_WORK_DIR/rucio/connection.json"
  [ -f "$info" ] || return 0
  airflow connections delete rucio_default >/dev/null 2>&1 || true
  airflow connections add rucio_default --conn-json "$(python - "$info" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(json.dumps({"conn_type": "generic", "host": d["rucio_host"], "login": d["username"], "password": d["password"],
                  "extra": {"auth_host": d["auth_host"], "account": d["account"], "auth_type": d["auth_type"], "vo": d["vo"]}}))
PY
)" >/dev/null
  echo "Airflow connection rucio_default -> $(python -c "import json;print(json.load(open('$info'))['rucio_host'])")"
}

start() {
  prepare
  python -c 'from drp_campaign.settings import scrub_env_dumps as s; n = s(); n and print(n, "bps environment dumps scrubbed")'
  export AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret")"
  # The running scheduler keeps the executor it started with: a switch needs a stop first.
  if running scheduler && [ -f "$PIDS/executor" ] && [ "$(cat "$PIDS/executor")" != "$AIRFLOW__CORE__EXECUTOR" ]; then
    echo "error: Airflow here runs $(cat "$PIDS/executor"), not $AIRFLOW__CORE__EXECUTOR (DRP_EXECUTOR=$DRP_EXECUTOR); stop it first: make stop" >&2
    exit 1
  fi
  echo "$AIRFLOW__CORE__EXECUTOR" > "$PIDS/executor"
  for svc in "${SERVICES[@]}"; do
    if running "$svc"; then echo "$svc already running (pid $(cat "$PIDS/$svc.pid"))"; continue; fi
    # shellcheck disable=SC2046  # the command's words, split on purpose
    setsid nohup $(command_of "$svc") >"$LOGS/$svc.log" 2>&1 < /dev/null &
    echo $! > "$PIDS/$svc.pid"
  done
  local deadline=$((SECONDS + 120))
  until curl -fsS "http://127.0.0.1:$DRP_AIRFLOW_PORT/api/v2/monitor/health" 2>/dev/null | grep -q '"scheduler":{"status":"healthy"'; do
    for svc in "${SERVICES[@]}"; do
      running "$svc" || { tail -30 "$LOGS/$svc.log" >&2; echo "error: airflow $svc exited (log: $LOGS/$svc.log)" >&2; exit 1; }
    done
    [ $SECONDS -lt $deadline ] || { echo "error: Airflow not healthy after 120 s (logs: $LOGS)" >&2; exit 1; }
    sleep 1
  done
  [ "$DRP_EXECUTOR" = celery ] && wait_for_workers
  echo "Airflow is up: http://127.0.0.1:$DRP_AIRFLOW_PORT ($AIRFLOW__CORE__EXECUTOR; logs: $LOGS)"
}

edge_registered() {  # queue: its Edge worker (named <host>-<queue>) is registered with the api-server, not offline
  psql -h "$DRP_PG_HOST" -p "$DRP_AIRFLOW_DB_PORT" -U "$DRP_PG_USER" -d "$DRP_AIRFLOW_DB" -tAc "SELECT 1 FROM edge_worker
    WHERE worker_name LIKE '%-$1' AND state NOT IN ('offline', 'unknown', 'offline maintenance')" 2>/dev/null | grep -q 1
}

# Each site's worker is ready: a Celery one connected to the broker, an Edge one registered.
wait_for_workers() {
  local deadline=$((SECONDS + 120)) svc
  for svc in "${SERVICES[@]}"; do
    [[ $svc == worker-* ]] || continue
    # Celery says "<queue>@<host> ready."; an Edge worker is ready once the api-server has
    # registered it (it signs in with the JWT secret: a refused one exits).
    until grep -q " ready" "$LOGS/$svc.log" 2>/dev/null || edge_registered "${svc#worker-}"; do
      running "$svc" || { tail -30 "$LOGS/$svc.log" >&2; echo "error: $svc exited (log: $LOGS/$svc.log)" >&2; exit 1; }
      [ $SECONDS -lt $deadline ] || { echo "error: $svc not ready after 120 s (log: $LOGS/$svc.log)" >&2; exit 1; }
      sleep 1
    done
  done
}

stop() {
  # Every service a pid file names, workers included even if DRP_EXECUTOR changed since they started.
  stop_all "" $(printf '%s\n' "${SERVICES[@]}" $(cd "$PIDS" 2>/dev/null && for f in *.pid; do [ -e "$f" ] && echo "${f%.pid}"; done) | sort -u)
  # The sites' warm stack servers serve the workers' stack commands: they go with the workers.
  if [ -d "$DRP_WORK_DIR/stack-servers" ] && [ -x "$DRP_STACK_PREFIX/bin/python" ]; then
    "$DRP_STACK_PREFIX/bin/python" -m drp_campaign.stackside.warm stop --dir "$DRP_WORK_DIR/stack-servers" >/dev/null || true
  fi
}

status() {
  for svc in "${SERVICES[@]}"; do
    if running "$svc"; then echo "$svc: running (pid $(cat "$PIDS/$svc.pid"))"; else echo "$svc: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
