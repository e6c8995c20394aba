#!/usr/bin/env bash
# airflow-init of docker-compose.yml: runs once, as root, before every other Airflow service (they
# start only when it completed successfully). It refuses to go on without the secrets, then gives
# the shared volumes to AIRFLOW_UID, migrates the metadata DB, makes the Connection rucio_default
# from the environment and validates every campaign file, so a bad one stops the deployment here.
set -euo pipefail

fail() { echo "airflow-init: error: $*" >&2; exit 1; }

# docker-compose refuses to start without the secrets (${VAR:?...}); checked again for this image
# started by other means (Kubernetes, docker run). deploy/env.example says how to make each.
need() { [ -n "${!1:-}" ] || fail "$1 is not set (docker-compose.yml makes it from ${2:-$1} in .env)"; }
need AIRFLOW__DATABASE__SQL_ALCHEMY_CONN POSTGRES_PASSWORD
need AIRFLOW__CELERY__BROKER_URL REDIS_PASSWORD
need AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW_JWT_SECRET
need AIRFLOW__CORE__FERNET_KEY AIRFLOW_FERNET_KEY
need RUCIO_ACCOUNT_PASSWORD
need RUCIO_HOST
need RUCIO_ACCOUNT
[ "${#AIRFLOW__API_AUTH__JWT_SECRET}" -ge 32 ] \
  || fail "AIRFLOW_JWT_SECRET is shorter than 32 characters: make one with: openssl rand -hex 32"
python -c 'import os; from cryptography.fernet import Fernet; Fernet(os.environ["AIRFLOW__CORE__FERNET_KEY"])' \
  2>/dev/null || fail "AIRFLOW_FERNET_KEY is not a Fernet key: make one with: python3 -c" \
  "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"

# The named volumes: task logs (every Airflow service reads them), the simple auth manager's
# generated passwords, the work dir (repos, BPS submit dirs): AIRFLOW_UID's, group 0, no others.
# Walked only when not yet AIRFLOW_UID's (a work dir of Butler repos is large).
for dir in "$AIRFLOW_HOME/logs" "$AIRFLOW_HOME/config" "$DRP_WORK_DIR"; do
  mkdir -p "$dir"
  [ "$(stat -c %u "$dir")" = "${AIRFLOW_UID:?}" ] || chown -R "$AIRFLOW_UID:0" "$dir"
  chmod 0770 "$dir"
done

airflow db migrate

# The Connection the Rucio hook reads (hooks/rucio.py). Imported from a private file, not passed on
# a command line; stored encrypted with the fernet key; in no other service's environment.
conn_file="$(umask 077 && mktemp --suffix .json)"
trap 'rm -f "$conn_file"' EXIT
python - "$conn_file" <<'PY'
import json, os, sys

host, account = os.environ["RUCIO_HOST"], os.environ["RUCIO_ACCOUNT"]
conn = {"conn_type": "generic", "host": host, "login": account, "password": os.environ["RUCIO_ACCOUNT_PASSWORD"],
        "extra_dejson": {"auth_host": host, "account": account, "auth_type": "userpass", "vo": "def"}}
with open(sys.argv[1], "w") as f:
    json.dump({"rucio_default": conn}, f)
PY
airflow connections import --overwrite "$conn_file"

campaigns="$(python -c 'from drp_campaign.settings import CAMPAIGNS_DIR; print(CAMPAIGNS_DIR)')"
drp-campaign validate "$campaigns"/*.yaml
echo "airflow-init: done"
