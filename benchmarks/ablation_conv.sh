#!/bin/sh
# The 3D-aware vs plain ablation at one budget: 400 steps of 16 on runs/small400 (351 training subjects), then
# the same sample evaluation for both. Needs the fit run (models/small-1k/MODEL_CARD.md gives its commands:
#   synthesise 400 subjects into data/small, fit them into runs/small400, then extend data/small to 1,000
#   subjects, whose 120 val/test ones are the real side of `rodin eval samples`).
# Run from the repository root; logs go to logs/. Its figures (2026-12-02) came from the small preset's base
# recipe of that day, pinned below: v-prediction, no mean-planes head, guidance 2.
set -e
mkdir -p logs
for conv in aware plain; do
  .venv/bin/rodin train base --triplanes runs/small400 --out runs/abl-$conv --preset small --steps 400 \
      --conv $conv --semantic models/small-1k/semantic --sample-every 0 --prediction v_prediction \
      --no-mean-planes > logs/abl-$conv.log 2>&1
  cp -r models/small-1k/prior runs/abl-$conv/prior
  .venv/bin/python - "$conv" <<'PY'
import json, sys
p = f"runs/abl-{sys.argv[1]}/model_index.json"; d = json.load(open(p)); d["components"]["prior"] = "prior"
open(p, "w").write(json.dumps(d, indent=2) + "\n")
PY
done
for conv in aware plain; do
  .venv/bin/rodin eval samples runs/abl-$conv --data data/small --samples 64 --views 1 --resolution 64 \
      --features judge --judge models/small-1k/judge --steps 10 --seed 0 --kid-subset 100 --guidance 2 \
      > logs/eval-abl-$conv.log 2>&1
done
echo done > logs/ablate.done
