#!/usr/bin/env bash
# The realism benchmark's data (conf/generate/realism*.yaml) on two workers, one thread each:
# worker 1 makes every host's references (the pretraining recipe) and the superposed twins,
# then joins worker 0 on the `full` cells (hours: ~2–10 min a cell on one core). Resumable:
# start it again after a stop (clearing the claims of shards that were running, see
# scripts/generate_shards.sh); then consolidate both sets and run scripts/bench_realism.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
run=scripts/generate_shards.sh
"$run" realism generate 1 &
{
  "$run" realism_references references 1
  "$run" realism_superposed generate 1
  "$run" realism generate 1
} &
wait
