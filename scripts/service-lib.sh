# Sourced by the scripts that run a local service natively (rucio-server.sh, idds-server.sh):
# pid files in $PIDS, each service in its own session so that stop reaches all of it.
running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

stop_one() {  # name [label]: TERM the service's process group, KILL what is left after ~10 s
  if running "$1"; then
    local pid; pid="$(cat "$PIDS/$1.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped ${2:-}$1"
  fi
  rm -f "$PIDS/$1.pid"
}
