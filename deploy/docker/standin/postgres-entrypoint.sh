#!/usr/bin/env bash
# The stand-in PostgreSQL image's entrypoint, with the interface of upstream's: as root it
# gives the data folder to `postgres` and runs itself again as that user; on an empty folder
# it makes the cluster (superuser POSTGRES_USER with POSTGRES_PASSWORD, required), creates
# POSTGRES_DB, and runs /docker-entrypoint-initdb.d/* (*.sh run or sourced, *.sql through
# psql) with the server on its socket only; then it runs the server, listening everywhere.
set -euo pipefail

if [[ "$(id -u)" == 0 ]]; then
  install -d -o postgres -g postgres -m 0700 "${PGDATA}"
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi
shift

run_init_scripts() {
  local script
  for script in /docker-entrypoint-initdb.d/*; do
    case "${script}" in
      *.sh)
        # shellcheck disable=SC1090
        if [[ -x "${script}" ]]; then "${script}"; else . "${script}"; fi ;;
      *.sql) psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname "${POSTGRES_DB}" -f "${script}" ;;
      *) [[ -e "${script}" ]] && echo "ignoring ${script}" >&2 ;;
    esac
  done
}

initialise_cluster() {
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set: the superuser gets no default password}"
  export POSTGRES_USER="${POSTGRES_USER:-postgres}"
  export POSTGRES_DB="${POSTGRES_DB:-${POSTGRES_USER}}"
  initdb --username="${POSTGRES_USER}" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD}") \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
  echo "host all all all scram-sha-256" >>"${PGDATA}/pg_hba.conf"
  pg_ctl --silent -w -o "-c listen_addresses=''" start
  export PGUSER="${POSTGRES_USER}" PGHOST=/var/run/postgresql
  if [[ "${POSTGRES_DB}" != postgres ]]; then
    psql -v ON_ERROR_STOP=1 --no-psqlrc --dbname postgres --set=db="${POSTGRES_DB}" \
      <<<'CREATE DATABASE :"db";'
  fi
  run_init_scripts
  pg_ctl --silent -w -m fast stop
  unset PGUSER PGHOST
}

if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
  initialise_cluster
fi
exec postgres -c listen_addresses='*' "$@"
