#!/usr/bin/env bash
# The real iDDS server and the local PanDA relay (see localservices/panda/__init__.py).
#   scripts/idds-server.sh start [--no-clerk]
#                                   bootstrap (configs, database, schema; idempotent), then iDDS's
#                                   REST app under gunicorn on 127.0.0.1:$DRP_IDDS_PORT/idds and the
#                                   relay on 127.0.0.1:$DRP_PANDA_RELAY_PORT/server/panda; waits
#                                   until both answer; then iDDS's Clerk agent (unless --no-clerk or
#                                   DRP_IDDS_CLERK=0), which applies abort/retry to request states
#   scripts/idds-server.sh stop     stop all three (by pid)
#   scripts/idds-server.sh status
# State, configs, logs and pids under $DRP_WORK_DIR/idds/. The Airflow Connection for the relay:
# $DRP_WORK_DIR/idds/connection.json (format: drp_campaign/panda_connection.py).
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/service-lib.sh"
IHOME="$DRP_WORK_DIR/idds" PIDS="$DRP_WORK_DIR/idds/pids" LOGS="$DRP_WORK_DIR/idds/logs"
PY="$DRP_IDDS_PREFIX/bin/python"
IDDS_URL="http://127.0.0.1:$DRP_IDDS_PORT/idds"
RELAY_URL="http://127.0.0.1:$DRP_PANDA_RELAY_PORT/server/panda"
RELAY_DN="$(sed -n 's/^RELAY_DN = "\(.*\)"$/\1/p' "$ROOT/localservices/panda/__init__.py")"

# iDDS answers /ping only to an allowed DN (auth cannot be switched off), and its front only to the
# relay's key (idds_app.py; relay.json); the key goes to curl on stdin, not on its command line.
idds_ok() {
  local key; key="$(sed -n 's/^ *"idds_key": "\(.*\)",\{0,1\}$/\1/p' "$IHOME/relay.json" 2>/dev/null)"
  printf 'X-DRP-Relay-Key: %s\n' "$key" | curl -fsS -m 2 -H @- -H "SSL-CLIENT-S-DN: $RELAY_DN" -H "SSL-CLIENT-CERT: ping" \
    "$IDDS_URL/ping" 2>/dev/null | grep -q '"OK"'
}
relay_ok() { curl -fsS -m 2 "$RELAY_URL/isAlive" 2>/dev/null | grep -q 'alive=yes'; }

need_env() {  # without importing idds: it wants its config at import
  [ -x "$PY" ] && "$PY" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('idds.rest', 'idds.doma', 'idds.prompt', 'gunicorn', 'psycopg2', 'localservices.panda')))" 2>/dev/null || {
    echo "error: the iDDS environment $DRP_IDDS_PREFIX is missing or incomplete: run bash scripts/setup-envs.sh" >&2; exit 1; }
}

start_one() {  # name port app ok-function
  local name=$1 port=$2 app=$3 ok=$4
  if running "$name"; then echo "$name already running (pid $(cat "$PIDS/$name.pid"))"; return; fi
  if $ok || curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/"; then
    echo "error: something else already answers on 127.0.0.1:$port (not started by this script for $DRP_WORK_DIR); set DRP_IDDS_PORT / DRP_PANDA_RELAY_PORT" >&2; exit 1
  fi
  setsid nohup "$DRP_IDDS_PREFIX/bin/gunicorn" -b "127.0.0.1:$port" -w 1 --threads 4 --timeout 300 --no-control-socket \
    --access-logfile "$LOGS/$name.access.log" --error-logfile "$LOGS/$name.log" \
    "$app" >"$LOGS/$name.out" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

wait_for() {  # name ok-function
  local deadline=$((SECONDS + 60))
  until $2; do
    running "$1" || { tail -30 "$LOGS/$1.log" >&2; echo "error: $1 exited (log: $LOGS/$1.log)" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "error: $1 not answering after 60 s (log: $LOGS/$1.log)" >&2; exit 1; }
    sleep 0.2
  done
}

start() {
  local clerk=1 t0; t0="$(now)"
  [ "${1:-}" = "--no-clerk" ] && clerk=0
  [ "${DRP_IDDS_CLERK:-1}" = "0" ] && clerk=0
  need_env
  mkdir -p "$PIDS" "$LOGS"
  if ! "$PY" -m localservices.panda.bootstrap >"$LOGS/bootstrap.json" 2>"$LOGS/bootstrap.log"; then
    tail -20 "$LOGS/bootstrap.log" >&2; echo "error: iDDS bootstrap failed (log: $LOGS/bootstrap.log)" >&2; exit 1
  fi
  # IDDS_CONFIG, IDDS_AUTH_CONFIG, ... for both servers (iDDS reads them at import).
  eval "$("$PY" -m localservices.panda.config env)"
  start_one idds "$DRP_IDDS_PORT" localservices.panda.idds_app:application idds_ok
  start_one relay "$DRP_PANDA_RELAY_PORT" localservices.panda.relay:application relay_ok
  wait_for idds idds_ok
  wait_for relay relay_ok
  if [ $clerk = 1 ]; then
    if running clerk; then echo "clerk already running (pid $(cat "$PIDS/clerk.pid"))"
    else
      IDDS_AGENTS=clerk setsid nohup "$PY" -m idds.agents.main >"$LOGS/clerk.out" 2>&1 </dev/null &
      echo $! >"$PIDS/clerk.pid"
    fi
  fi
  echo "iDDS is up: $IDDS_URL, PanDA relay $RELAY_URL in $(since "$t0") s (clerk: $([ $clerk = 1 ] && echo running || echo off); connection: $IHOME/connection.json; logs: $LOGS)"
}

stop() { stop_all "" clerk relay idds; }

status() {
  for svc in idds relay clerk; do
    if running "$svc"; then echo "$svc: running (pid $(cat "$PIDS/$svc.pid"))"; else echo "$svc: stopped"; fi
  done
  if idds_ok; then echo "ping $IDDS_URL: OK"; else echo "ping $IDDS_URL: no answer"; fi
  if relay_ok; then echo "isAlive $RELAY_URL: alive=yes"; else echo "isAlive $RELAY_URL: no answer"; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start [--no-clerk]|stop|status" >&2; exit 2 ;;
esac
