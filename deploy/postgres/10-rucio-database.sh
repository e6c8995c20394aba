#!/usr/bin/env bash
# Run by the postgres image on its first start only (an empty data volume), from
# /docker-entrypoint-initdb.d: Rucio's own role and database beside Airflow's, the role's password
# from RUCIO_DB_PASSWORD (a psql variable, never spliced into the SQL text). Changing the password
# later takes an ALTER ROLE rucio PASSWORD '...' by hand, as for POSTGRES_PASSWORD.
: "${RUCIO_DB_PASSWORD:?RUCIO_DB_PASSWORD is not set: set it in .env (see deploy/env.example)}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v rucio_password="$RUCIO_DB_PASSWORD" <<'SQL'
CREATE ROLE rucio LOGIN PASSWORD :'rucio_password';
CREATE DATABASE rucio OWNER rucio;
SQL
