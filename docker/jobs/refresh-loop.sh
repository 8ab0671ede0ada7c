#!/usr/bin/env bash
# The daily refresh scheduler of the compose stack (`refresh` service).
#
# Runs `profilerec-jobs refresh [ARGS...]` every day at PROFILEREC_REFRESH_AT (HH:MM, UTC; default 03:00),
# and once at start when PROFILEREC_REFRESH_ON_START=1. A run longer than PROFILEREC_REFRESH_TIMEOUT_S
# (default 6 h) is stopped (TERM, then KILL a minute later) and counts as failed; a failed run is logged
# and the next one happens at the next scheduled time. The job takes its own lock, so a manual run
# (`docker compose run --rm refresh profilerec-jobs refresh`) never overlaps a scheduled one.
#
# While alive the loop touches PROFILEREC_HEARTBEAT_FILE at least once a minute, also during a run: the
# image's healthcheck (profilerec-jobs-healthcheck) reads it. TERM/INT stop the running job and exit.
set -uo pipefail

at=${PROFILEREC_REFRESH_AT:-03:00}
timeout_s=${PROFILEREC_REFRESH_TIMEOUT_S:-21600}
on_start=${PROFILEREC_REFRESH_ON_START:-0}
heartbeat=${PROFILEREC_HEARTBEAT_FILE:-/tmp/profilerec-scheduler.heartbeat}
child=0
beat=0

log() {  # log LEVEL MESSAGE: one JSON line on stderr, like the Python jobs
  printf '{"ts":"%s","level":"%s","logger":"refresh-loop","msg":"%s"}\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >&2
}

if ! [[ $at =~ ^([01][0-9]|2[0-3]):[0-5][0-9]$ ]]; then
  log error "PROFILEREC_REFRESH_AT must be HH:MM (UTC), got '$at'"
  exit 2
fi
if ! [[ $timeout_s =~ ^[1-9][0-9]*$ ]]; then
  log error "PROFILEREC_REFRESH_TIMEOUT_S must be a positive integer, got '$timeout_s'"
  exit 2
fi

stop() {
  log info "stopping"
  if [ "$beat" -ne 0 ]; then
    kill "$beat" 2>/dev/null
  fi
  if [ "$child" -ne 0 ]; then
    kill -TERM "$child" 2>/dev/null
    wait "$child"
  fi
  exit 143
}
trap stop TERM INT

seconds_until_next_run() {
  local now next
  now=$(date -u +%s)
  next=$(date -u -d "today $at" +%s)
  if [ "$next" -le "$now" ]; then
    next=$((next + 86400))
  fi
  echo $((next - now))
}

pause() {  # pause SECONDS: sleep in steps of at most a minute, touching the heartbeat
  local left=$1 step
  while [ "$left" -gt 0 ]; do
    touch "$heartbeat"
    step=$((left < 60 ? left : 60))
    sleep "$step" &
    child=$!
    wait "$child"
    child=0
    left=$((left - step))
  done
}

run_refresh() {
  local started status
  started=$(date -u +%s)
  log info "refresh starting"
  # The heartbeat goes on in a subshell while the job runs (its sleep ends with it).
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while true; do
      touch "$heartbeat"
      sleep 30 &
      nap=$!
      wait "$nap"
    done
  ) &
  beat=$!
  timeout --signal=TERM --kill-after=60 "$timeout_s" profilerec-jobs refresh "$@" &
  child=$!
  wait "$child"
  status=$?
  child=0
  kill "$beat" 2>/dev/null
  beat=0
  if [ "$status" -eq 0 ]; then
    log info "refresh succeeded in $(($(date -u +%s) - started)) s"
  elif [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    log error "refresh timed out after ${timeout_s} s (exit $status)"
  else
    log error "refresh failed (exit $status)"
  fi
}

touch "$heartbeat"
log info "scheduler started: daily refresh at $at UTC"
if [ "$on_start" = 1 ]; then
  run_refresh "$@"
fi
while true; do
  pause "$(seconds_until_next_run)"
  run_refresh "$@"
done
