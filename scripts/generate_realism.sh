#!/usr/bin/env bash
# The realism benchmark's data (conf/generate/realism*.yaml) on two workers, one thread each:
# worker 0 makes the `full` cells (hours: 5–10 min a cell on one core); worker 1 makes, host by
# host, the references (the pretraining recipe) and the superposed twins of its cells, then
# joins worker 0 on the `full` cells. Resumable: start it again after a stop (clearing the
# claims of shards that were running, see scripts/generate_shards.sh); then run
# scripts/bench_realism.py, which reads whatever cells have their twin and references.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run=scripts/generate_shards.sh
hosts=13  # conf/generate/realism_references.yaml: num_shards, one host each
"$run" realism generate 1 &
{
  for ((j = 0; j < hosts; j++)); do
    "$run" realism_references references 1 "$j" "$j"
    "$run" realism_superposed generate 1 "$j" "$j"
  done
  "$run" realism generate 1
} &
wait
