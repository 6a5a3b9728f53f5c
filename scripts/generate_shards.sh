#!/usr/bin/env bash
# Run one stage of a generation preset shard by shard with WORKERS processes side by side.
# A worker claims a shard before it starts it (a folder made atomically under
# outputs/generate/<preset>/<stage>/claimed), so several runs of this script, even of different
# presets started one after the other, share the shards without doing one twice. Finished shards
# get a marker (…/done) and are skipped without starting Python, so the script can be stopped at
# any moment and started again; a shard stopped part-way resumes where it stopped. After a kill,
# remove the claims of the shards that were running (rm -r outputs/generate/<preset>/<stage>/claimed).
#   scripts/generate_shards.sh PRESET STAGE [WORKERS=1] [FIRST=0] [LAST=num_shards-1] [overrides ...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset="$1"
stage="$2"
shift 2
num_shards=$(python -c "
from hydra import compose, initialize_config_dir
from defectnet.cli import CONF_DIR
with initialize_config_dir(config_dir=CONF_DIR, version_base='1.3'):
    print(compose('generate', overrides=['generate=$preset']).num_shards)")
workers="${1:-1}"
first="${2:-0}"
last="${3:-$((num_shards - 1))}"
shift $(($# < 3 ? $# : 3))
# one core's worth of threads per worker: more would only make the workers fight for cores
threads=$(($(nproc) / workers > 0 ? $(nproc) / workers : 1))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-$threads}"
logs="outputs/generate/$preset/$stage"
mkdir -p "$logs/done" "$logs/claimed"
worker() {
  local w="$1"
  shift
  for ((s = first + w; s <= last; s += workers)); do
    [[ -f "$logs/done/$s" ]] && continue
    mkdir "$logs/claimed/$s" 2>/dev/null || continue
    echo "$(date -u +%FT%TZ) worker $w: shard $s" >>"$logs/worker-$first-$w.log"
    if defectnet-generate generate="$preset" stage="$stage" shard="$s" progress=false "$@" \
      >>"$logs/worker-$first-$w.log" 2>&1; then
      touch "$logs/done/$s"
    else
      echo "shard $s exited with $?" >>"$logs/worker-$first-$w.log"
    fi
  done
}
for ((w = 0; w < workers; w++)); do
  worker "$w" "$@" &
done
wait
