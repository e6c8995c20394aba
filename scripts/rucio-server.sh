#!/usr/bin/env bash
# The local Rucio 41 server of the demo and the tests (see localservices/rucio/__init__.py).
#   scripts/rucio-server.sh start [--no-daemons]  bootstrap (DB, schema, accounts, RSEs, scopes;
#                                   idempotent), REST API under gunicorn on 127.0.0.1:$DRP_RUCIO_PORT,
#                                   wait until /ping answers, then Rucio's daemons in a background
#                                   loop (unless --no-daemons or DRP_RUCIO_DAEMONS=0)
#   scripts/rucio-server.sh stop    stop the daemon loop and the server (by pid)
#   scripts/rucio-server.sh status
#   scripts/rucio-server.sh daemons-once [--rule ID]... [--timeout S]
#                                   run the daemons in-process until the rules settle; prints JSON
# State, configs, logs and pids under $DRP_WORK_DIR/rucio/. Clients of the controller account:
# RUCIO_CONFIG=$DRP_WORK_DIR/rucio/client.cfg, or $DRP_WORK_DIR/rucio/connection.json.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/service-lib.sh"
RHOME="$DRP_WORK_DIR/rucio" PIDS="$DRP_WORK_DIR/rucio/pids" LOGS="$DRP_WORK_DIR/rucio/logs"
PY="$DRP_RUCIO_PREFIX/bin/python"
URL="http://127.0.0.1:$DRP_RUCIO_PORT"
export RUCIO_CONFIG="$RHOME/rucio.cfg"

pinging() { curl -fsS -m 2 "$URL/ping" 2>/dev/null | grep -q '"version"'; }

need_env() {
  [ -x "$PY" ] && "$PY" -c "import rucio.web, localservices.rucio" 2>/dev/null || {
    echo "error: the Rucio environment $DRP_RUCIO_PREFIX is missing or incomplete: run bash scripts/setup-envs.sh" >&2; exit 1; }
}

start() {
  local daemons=1 t0; t0="$(now)"
  [ "${1:-}" = "--no-daemons" ] && daemons=0
  [ "${DRP_RUCIO_DAEMONS:-1}" = "0" ] && daemons=0
  need_env
  mkdir -p "$PIDS" "$LOGS"
  if ! "$PY" -m localservices.rucio.bootstrap >"$LOGS/bootstrap.json" 2>"$LOGS/bootstrap.log"; then
    tail -20 "$LOGS/bootstrap.log" >&2; echo "error: Rucio bootstrap failed (log: $LOGS/bootstrap.log)" >&2; exit 1
  fi
  if running server; then
    echo "rucio server already running (pid $(cat "$PIDS/server.pid"))"
  else
    if pinging; then
      echo "error: something else already answers on $URL (not started by this script for $DRP_WORK_DIR); set DRP_RUCIO_PORT" >&2; exit 1
    fi
    setsid nohup "$DRP_RUCIO_PREFIX/bin/gunicorn" -b "127.0.0.1:$DRP_RUCIO_PORT" -w 2 --timeout 300 \
      --access-logfile "$LOGS/access.log" --error-logfile "$LOGS/gunicorn.log" \
      rucio.web.rest.flaskapi.v1.main:application >"$LOGS/gunicorn.out" 2>&1 </dev/null &
    echo $! >"$PIDS/server.pid"
  fi
  local deadline=$((SECONDS + 60))
  until pinging; do
    running server || { tail -30 "$LOGS/gunicorn.log" >&2; echo "error: rucio server exited (log: $LOGS/gunicorn.log)" >&2; exit 1; }
    [ $SECONDS -lt $deadline ] || { echo "error: $URL/ping not answering after 60 s (log: $LOGS/gunicorn.log)" >&2; exit 1; }
    sleep 0.3
  done
  if [ $daemons = 1 ]; then
    if running daemons; then echo "rucio daemons already running (pid $(cat "$PIDS/daemons.pid"))"
    else
      setsid nohup "$PY" -m localservices.rucio.daemons loop --interval "${DRP_RUCIO_DAEMON_INTERVAL:-3}" >"$LOGS/daemons.out" 2>&1 </dev/null &
      echo $! >"$PIDS/daemons.pid"
    fi
  fi
  echo "Rucio is up: $URL in $(since "$t0") s (daemons: $([ $daemons = 1 ] && echo loop || echo off); client config: $RHOME/client.cfg; logs: $LOGS)"
}

stop() { stop_all "rucio " daemons server; }

status() {
  for svc in server daemons; do
    if running "$svc"; then echo "rucio $svc: running (pid $(cat "$PIDS/$svc.pid"))"; else echo "rucio $svc: stopped"; fi
  done
  if pinging; then echo "ping $URL: $(curl -fsS -m 2 "$URL/ping")"; else echo "ping $URL: no answer"; fi
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  status) status ;;
  daemons-once) shift; need_env; exec "$PY" -m localservices.rucio.daemons once "$@" ;;
  *) echo "usage: $0 start [--no-daemons]|stop|status|daemons-once [--rule ID]... [--timeout S]" >&2; exit 2 ;;
esac
