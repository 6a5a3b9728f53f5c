#!/usr/bin/env bash
# Build the pretraining set (generate=pretrain) shard by shard — one shard is one parent: its
# defect library, its samples, then its single-dopant references (stage=shard) — with WORKERS
# processes side by side (scripts/generate_shards.sh: resumable, shards claimed and marked).
#   scripts/generate_pretrain.sh [WORKERS=1] [FIRST=0] [LAST=num_shards-1] [overrides ...]
exec "$(dirname "$0")/generate_shards.sh" pretrain shard "$@"
