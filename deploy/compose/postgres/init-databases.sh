#!/usr/bin/env bash
# One role and one database per component (Airflow metadata, MLflow backend, monitoring store),
# each owned by its role and closed to the others. Run by the postgres image's entrypoint,
# once, on an empty data volume; the passwords come from deploy/compose/.env.
set -euo pipefail

create_database() {  # name password: role and database share the name
  # psql variables (:"name", :'password') quote the values, so any password is safe here.
  psql --no-psqlrc -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=name="$1" --set=password="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_database airflow "${AIRFLOW_DB_PASSWORD:?}"
create_database mlflow "${MLFLOW_DB_PASSWORD:?}"
create_database monitoring "${MONITORING_DB_PASSWORD:?}"
