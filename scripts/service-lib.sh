# Sourced by the scripts that run a local service natively (airflow-services.sh, rucio-server.sh,
# idds-server.sh):
# pid files in $PIDS, each service in its own session so that stop reaches all of it.
running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

stop_all() {  # label name...: TERM every running one's process group at once, KILL what is left after ~15 s
  # At once, not one after another: a stack of ten services took ~50 s to stop, each given its time in turn.
  local label="$1" svc pid alive
  local pids=() stopped=()
  shift
  for svc in "$@"; do
    if running "$svc"; then
      pid="$(cat "$PIDS/$svc.pid")"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid") stopped+=("$svc")
    fi
  done
  for _ in $(seq 1 60); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  for svc in "$@"; do rm -f "$PIDS/$svc.pid"; done
  for svc in "${stopped[@]}"; do echo "stopped $label$svc"; done
}
