#!/usr/bin/env bash
# The stand-in Airflow image's entrypoint, with the interface of upstream's: wait until the
# metadata database answers (CONNECTION_CHECK_MAX_COUNT tries, CONNECTION_CHECK_SLEEP_TIME
# seconds apart; 0 tries skips the wait), then run `bash ...` or `python ...` as given, and
# anything else as an `airflow` subcommand (a leading `airflow` is accepted too).
set -euo pipefail

wait_for_metadata_database() {
  local tries="${CONNECTION_CHECK_MAX_COUNT:-20}" pause="${CONNECTION_CHECK_SLEEP_TIME:-3}"
  local attempt answer=""
  for ((attempt = 1; attempt <= tries; attempt++)); do
    if answer="$(airflow db check 2>&1)"; then
      return 0
    fi
    echo "metadata database not reachable yet (${attempt}/${tries})" >&2
    sleep "${pause}"
  done
  echo "metadata database unreachable after ${tries} tries; the last answer:" >&2
  tail -n 5 <<<"${answer}" >&2
  exit 1
}

if [[ "${CONNECTION_CHECK_MAX_COUNT:-20}" -gt 0 ]] && [[ "${1:-}" != "version" ]]; then
  wait_for_metadata_database
fi

case "${1:-}" in
  bash | python) exec "$@" ;;
  airflow) shift ;;
esac
exec airflow "$@"
