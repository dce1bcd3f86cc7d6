#!/bin/sh
# The 3D-aware vs plain ablation at the shipped model's budget: 1,500 steps of 16 on the 880 training
# subjects of runs/small1k. The 3D-aware side is models/small-1k's own base (its model card gives the
# command: the one below with --conv aware); this trains the plain side the same way, gives it the same
# prior, and scores both with the same judge against the same 120 held-out subjects of data/small.
# Needs data/small (1,000 subjects) and runs/small1k (models/small-1k/MODEL_CARD.md gives both commands).
# Run from the repository root; logs go to logs/.
set -e
mkdir -p logs
.venv/bin/rodin train base --triplanes runs/small1k --out runs/abl1k-plain --preset small --steps 1500 \
    --conv plain --semantic models/small-1k/semantic --sample-every 0 > logs/abl1k-plain.log 2>&1
cp -r models/small-1k/prior runs/abl1k-plain/prior
.venv/bin/python - <<'PY'
import json
p = "runs/abl1k-plain/model_index.json"; d = json.load(open(p)); d["components"]["prior"] = "prior"
open(p, "w").write(json.dumps(d, indent=2) + "\n")
PY
# models/small-1k/eval_samples.json holds the 3D-aware side, made by the same command.
.venv/bin/rodin eval samples runs/abl1k-plain --data data/small --samples 64 --views 1 --resolution 64 \
    --features judge --judge models/small-text/judge --steps 10 --seed 0 --kid-subset 100 \
    > logs/eval-abl1k-plain.log 2>&1
echo done > logs/ablate1k.done
