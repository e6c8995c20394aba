# Sourced by the other scripts: where everything lives and how Airflow is configured here.
# Override any of these in the environment before calling make.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DRP_WORK_DIR="${DRP_WORK_DIR:-$ROOT/var}"
# Repos, logs, BPS submit directories and the services' secrets live there: this user's only.
mkdir -p "$DRP_WORK_DIR" && chmod 700 "$DRP_WORK_DIR"
export DRP_STACK_PREFIX="${DRP_STACK_PREFIX:-$ROOT/.venvs/stack}"
export DRP_CONTROLLER_PREFIX="${DRP_CONTROLLER_PREFIX:-$ROOT/.venvs/controller}"
export DRP_RUCIO_PREFIX="${DRP_RUCIO_PREFIX:-$ROOT/.venvs/rucio}"
export DRP_RUCIO_PORT="${DRP_RUCIO_PORT:-8080}"
export DRP_RUCIO_DB="${DRP_RUCIO_DB:-drp_rucio}"
export DRP_TRANSFER_SERVICE="${DRP_TRANSFER_SERVICE:-rucio}"   # hops go through Rucio; "local" = plain copies
export DRP_LEDGER_URL="${DRP_LEDGER_URL:-postgresql+psycopg2://postgres@127.0.0.1:5432/drp_ledger}"
export DRP_PG_HOST="${DRP_PG_HOST:-127.0.0.1}" DRP_PG_USER="${DRP_PG_USER:-postgres}"
# The port of the PostgreSQL holding Airflow's metadata DB (the tests give one e2e stack a server
# of its own, so that a drill can restart it).
export DRP_AIRFLOW_DB_PORT="${DRP_AIRFLOW_DB_PORT:-5432}"
export DRP_AIRFLOW_DB="${DRP_AIRFLOW_DB:-drp_airflow}"
export DRP_AIRFLOW_PORT="${DRP_AIRFLOW_PORT:-8090}"   # not 8080: a Rucio server wants that one

export AIRFLOW_HOME="${AIRFLOW_HOME:-$DRP_WORK_DIR/airflow}"
# local: LocalExecutor, every task on this machine (the embedded default). celery: CeleryExecutor with
# the local Redis as broker and the metadata DB as result backend, one worker per site queue
# (drp-campaign worker), as a deployment runs it (docker-compose.yml); an Edge site's an Edge worker.
export DRP_EXECUTOR="${DRP_EXECUTOR:-local}"
case "$DRP_EXECUTOR" in
  local) export AIRFLOW__CORE__EXECUTOR=LocalExecutor ;;
  celery)
    # Celery by default; the Edge executor for a site marked edge_worker in sites.yaml (its worker
    # calls the api-server's /edge_worker API over HTTP(S), no broker or DB: drp-campaign worker).
    export AIRFLOW__CORE__EXECUTOR=CeleryExecutor,airflow.providers.edge3.executors.EdgeExecutor
    export AIRFLOW__EDGE__API_ENABLED=True
    export AIRFLOW__EDGE__API_URL="http://127.0.0.1:$DRP_AIRFLOW_PORT/edge_worker/v1/rpcapi"
    # Its own Redis database per environment (the demo 0, the tests theirs): queues never mix.
    export AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:6379/${DRP_REDIS_DB:-0}"
    export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql+psycopg2://$DRP_PG_USER@$DRP_PG_HOST:$DRP_AIRFLOW_DB_PORT/$DRP_AIRFLOW_DB"
    # A task message unacknowledged this long (its worker died) is delivered again; by then Airflow
    # has long retried the task (heartbeat timeout), and the stale delivery is refused: Airflow's default.
    export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400
    export DRP_WORKER_CONCURRENCY="${DRP_WORKER_CONCURRENCY:-4}" ;;
  *) echo "error: DRP_EXECUTOR=$DRP_EXECUTOR: use local (LocalExecutor) or celery (one Celery worker per site queue)" >&2
     return 2 2>/dev/null || exit 2 ;;
esac
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$AIRFLOW_HOME/plugins"   # our plugin comes by entry point
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-6}"
# Users and their roles in Airflow's simple auth manager (README "Users and roles"): viewer reads
# everything; operator (role USER) also triggers, clears, marks and approves campaign runs; admin
# also manages Connections (the Rucio and PanDA credentials), Variables, pools and config.
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,operator:user,viewer:viewer"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://$DRP_PG_USER@$DRP_PG_HOST:$DRP_AIRFLOW_DB_PORT/$DRP_AIRFLOW_DB"
export AIRFLOW__API__PORT="$DRP_AIRFLOW_PORT"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$DRP_AIRFLOW_PORT"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$DRP_AIRFLOW_PORT/execution/"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=5
# The grid lists each site's tasks in data-path order (place, check, step1, ..., release), not A-Z.
export AIRFLOW__API__GRID_VIEW_SORTING_ORDER=topological
export AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=600
export PATH="$DRP_CONTROLLER_PREFIX/bin:$PATH"
export DRP_IDDS_PREFIX="${DRP_IDDS_PREFIX:-$ROOT/.venvs/idds}"
export DRP_IDDS_PORT="${DRP_IDDS_PORT:-8092}" DRP_PANDA_RELAY_PORT="${DRP_PANDA_RELAY_PORT:-8093}"
export DRP_IDDS_DB="${DRP_IDDS_DB:-drp_idds}"
# Stack commands run forked from one warm stack process per site (drp_campaign/stackside/warm.py):
# the embedded default. "per-call" starts a Python of its own for each, as at a production site.
export DRP_STACK_SERVER="${DRP_STACK_SERVER:-warm}"
# Seconds between passes of the local Rucio daemons (judge, conveyor, reaper); Rucio's own daemons
# at a real deployment keep their defaults.
export DRP_RUCIO_DAEMON_INTERVAL="${DRP_RUCIO_DAEMON_INTERVAL:-1}"
