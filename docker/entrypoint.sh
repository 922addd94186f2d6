#!/bin/sh
# Entry point of every Observer container (web, workers, beat, Flower, migrate).
#
# prometheus_client's multiprocess mode keeps one file per process in PROMETHEUS_MULTIPROC_DIR
# and /metrics sums them all: the directory must exist before the first metric is touched (the
# app imports fail otherwise), and it must start empty, or a restarted container would report
# the dead processes of its previous run for ever.
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
  find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

exec "$@"
