#!/bin/sh
# Service container entrypoint: prepare the Prometheus multiprocess directory, then run the command.
#
# prometheus_client's multiprocess mode sums every *.db file of the directory: files left by a previous
# run of this container (a restart keeps /tmp unless it is a tmpfs) would be added to the new counters,
# and a reused pid would resurrect a dead worker's gauges. So the directory is emptied at every start.
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

exec "$@"
