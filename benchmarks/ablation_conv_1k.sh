#!/bin/sh
# The 3D-aware vs plain ablation at the shipped model's budget: 1,500 steps of 16 on the 880 training
# subjects of runs/small1k. The 3D-aware side is the base models/small-1k shipped on 2026-12-02 (the command
# below with --conv aware; v-prediction, no mean-planes head, guidance 2, the small preset's recipe of that
# day, pinned below); this trains the plain side the same way, gives it the same prior, and scores both with
# the same judge against the same 120 held-out subjects of data/small.
# Needs data/small (1,000 subjects) and runs/small1k (models/small-1k/MODEL_CARD.md gives both commands).
# Run from the repository root; logs go to logs/.
set -e
mkdir -p logs
.venv/bin/rodin train base --triplanes runs/small1k --out runs/abl1k-plain --preset small --steps 1500 \
    --conv plain --semantic models/small-1k/semantic --sample-every 0 --prediction v_prediction --no-mean-planes \
    > logs/abl1k-plain.log 2>&1
cp -r models/small-1k/prior runs/abl1k-plain/prior
.venv/bin/python - <<'PY'
import json
p = "runs/abl1k-plain/model_index.json"; d = json.load(open(p)); d["components"]["prior"] = "prior"
open(p, "w").write(json.dumps(d, indent=2) + "\n")
PY
# benchmarks/evals/small1k-vpred-samples.json holds the 3D-aware side, made by the same command.
.venv/bin/rodin eval samples runs/abl1k-plain --data data/small --samples 64 --views 1 --resolution 64 \
    --features judge --judge models/small-text/judge --steps 10 --seed 0 --kid-subset 100 --guidance 2 \
    > logs/eval-abl1k-plain.log 2>&1
echo done > logs/ablate1k.done
