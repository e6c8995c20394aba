#!/usr/bin/env bash
# Run a command with the controller environment and the DRP_* / Airflow settings of env.sh.
source "$(dirname "$0")/env.sh"
export AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$AIRFLOW_HOME/jwt_secret" 2>/dev/null || true)"
exec "$@"
