#!/usr/bin/env bash
# Create (or bring up to date) the environments from the pinned lock files:
#   .venvs/controller  Airflow 3.3 + clients (runs DAGs, operators, the CLI, the tests)
#   .venvs/stack       the LSST science stack (Python 3.12): what a site's setup command activates
#   .venvs/rucio       the local Rucio server and daemons (scripts/rucio-server.sh)
#   .venvs/idds        the real iDDS server + the local PanDA relay (scripts/idds-server.sh)
# The last two also get localservices/ (the stand-ins, not part of the shipped package), editable.
# Re-running is cheap: an environment is rebuilt only when its lock file changed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

python312() {
  if command -v pyenv >/dev/null && [ -x "$(pyenv prefix 3.12.1 2>/dev/null)/bin/python3.12" ]; then
    echo "$(pyenv prefix 3.12.1)/bin/python3.12"
  elif command -v python3.12 >/dev/null; then command -v python3.12
  else echo "error: Python 3.12 is needed (the LSST stack requires it); install it or pyenv 3.12.1" >&2; exit 1
  fi
}

quiet_pip() {  # prefix args...: pip's chatter goes to a log, shown only when it fails
  local prefix=$1; shift
  local log="$prefix/.pip.log"
  if ! "$prefix/bin/pip" install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "^WARNING: Location" "$log" >&2; echo "error: pip install $* failed in $prefix (log: $log)" >&2; exit 1
  fi
}

make_env() {  # prefix lockfile [local]: with `local`, localservices/ too
  local prefix=$1 lock=$2 with_local=${3:-} stamp="$1/.lock.sha256" want
  want="$(sha256sum "$lock" pyproject.toml localservices/pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "environment $prefix is up to date"; return
  fi
  echo "building $prefix from $lock ..."
  local t0=$SECONDS
  [ -x "$prefix/bin/python" ] || "$(python312)" -m venv "$prefix"
  quiet_pip "$prefix" -r "$lock"
  # The editable install writes rubin_drp_campaign.egg-info in the source tree: one at a time.
  mkdir -p "$ROOT/.venvs"
  ( flock 9; quiet_pip "$prefix" --no-deps -e . ) 9>"$ROOT/.venvs/.editable.lock"
  "$prefix/bin/python" -c "import drp_campaign" || { echo "error: $prefix: drp_campaign not importable" >&2; exit 1; }
  # Rucio loads the lfn2pfn module and the daemons the transfertool by module name, gunicorn the
  # iDDS front and the relay: all from localservices/, found as drp_campaign is.
  if [ "$with_local" = local ]; then
    ( flock 9; quiet_pip "$prefix" --no-deps -e localservices ) 9>"$ROOT/.venvs/.editable.lock"
    "$prefix/bin/python" -c "import localservices" \
      || { echo "error: $prefix: localservices not importable" >&2; exit 1; }
  fi
  echo "$want" > "$stamp"
  echo "built $prefix in $((SECONDS - t0)) s"
}

# Built side by side (each is mostly downloads and unpacking); each one's output is printed when it
# is done. The iDDS environment only the PanDA tests need: `setup-envs.sh --no-idds` (make demo) skips it.
wanted=("$DRP_CONTROLLER_PREFIX:requirements/controller.lock" "$DRP_STACK_PREFIX:requirements/stack.lock"
        "$DRP_RUCIO_PREFIX:requirements/rucio.lock:local")
[ "${1:-}" = "--no-idds" ] || wanted+=("$DRP_IDDS_PREFIX:requirements/idds.lock:local")
echo "environments (built side by side when their lock files changed): $(for i in "${wanted[@]}"; do printf '%s ' "$(basename "${i%%:*}")"; done)"
pids=() logs=()
for item in "${wanted[@]}"; do
  log="$(mktemp)"
  IFS=: read -r prefix lock with_local <<<"$item"
  make_env "$prefix" "$lock" "$with_local" >"$log" 2>&1 &
  pids+=($!) logs+=("$log")
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || failed=1
  cat "${logs[$i]}"; rm -f "${logs[$i]}"
done
exit $failed
