#!/usr/bin/env bash
# Build the pretraining set (generate=pretrain) shard by shard — one shard is one parent: its
# defect library, its samples, then its single-dopant references (stage=shard) — with WORKERS
# processes side by side. Shards already finished (a marker in outputs/generate/pretrain/done)
# are skipped without starting Python, so the script can be stopped at any moment and started
# again; a shard stopped part-way resumes where it stopped, and without markers (a fresh
# checkout) each finished shard costs one quick start to confirm it is done.
#   scripts/generate_pretrain.sh [WORKERS=1] [FIRST=0] [LAST=num_shards-1] [overrides ...]
set -euo pipefail
cd "$(dirname "$0")/.."
num_shards=$(python -c "import yaml;print(yaml.safe_load(open('conf/generate/pretrain.yaml'))['num_shards'])")
workers="${1:-1}"
first="${2:-0}"
last="${3:-$((num_shards - 1))}"
shift $(($# < 3 ? $# : 3))
# one core's worth of threads per worker: more would only make the workers fight for cores
threads=$(($(nproc) / workers > 0 ? $(nproc) / workers : 1))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$threads}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-$threads}"
logs="outputs/generate/pretrain"
mkdir -p "$logs/done"
worker() {
  local w="$1"
  shift
  for ((s = first + w; s <= last; s += workers)); do
    [[ -f "$logs/done/$s" ]] && continue
    echo "$(date -u +%FT%TZ) worker $w: shard $s" >>"$logs/worker-$first-$w.log"
    if defectnet-generate generate=pretrain stage=shard shard="$s" progress=false "$@" \
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
