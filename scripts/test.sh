#!/usr/bin/env bash
# make test: the whole suite. Unit tests first; then integration tests on the real stack and
# Butler repos; then the end-to-end campaigns in real Airflow services, which the tests start
# and stop themselves (own work dir, databases and port: a running demo is left alone).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
if ! pg_isready -h "$DRP_PG_HOST" -q; then
  echo "PostgreSQL is not answering on $DRP_PG_HOST:5432; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  for _ in $(seq 1 30); do pg_isready -h "$DRP_PG_HOST" -q && break; sleep 1; done
fi
# The warm stack servers the tests start (one per site and work dir) go when the suite ends.
stop_stack_servers() {
  for dir in "$DRP_WORK_DIR/stack-servers" "$DRP_WORK_DIR"/*/stack-servers; do
    [ -d "$dir" ] && "$DRP_STACK_PREFIX/bin/python" -m drp_campaign.stackside.warm stop --dir "$dir" >/dev/null
  done
  return 0
}
trap stop_stack_servers EXIT
"$DRP_CONTROLLER_PREFIX/bin/python" -m pytest -p no:cacheprovider "$@"
