#!/usr/bin/env bash
# Healthcheck of the jobs image.
#
# The refresh scheduler (profilerec-refresh-loop) touches PROFILEREC_HEARTBEAT_FILE at least once a
# minute, also while a refresh runs: healthy while the heartbeat is at most
# PROFILEREC_HEARTBEAT_MAX_AGE_S old (default 300). A container running one job to completion
# (bootstrap, a manual `profilerec-jobs ...`) has no heartbeat and is healthy while its process lives.
set -euo pipefail

heartbeat=${PROFILEREC_HEARTBEAT_FILE:-/tmp/profilerec-scheduler.heartbeat}
max_age=${PROFILEREC_HEARTBEAT_MAX_AGE_S:-300}

[ -e "$heartbeat" ] || exit 0
age=$(($(date +%s) - $(stat -c %Y "$heartbeat")))
if [ "$age" -gt "$max_age" ]; then
  echo "scheduler heartbeat is ${age}s old (limit ${max_age}s)" >&2
  exit 1
fi
