#!/bin/sh
# The over-fitting check of BENCHMARKS.md ("Where the gap is") with the base model's render loss on: a
# base trained on the first 40 subjects of data/small (37 in the training split) for 1,000 steps of 16,
# then read by the judge on those same subjects. The run without the render loss is the same command
# without --render-weight (benchmarks/evals/overfit40-training.json).
# Needs data/small (models/small-1k/MODEL_CARD.md gives the command). Run from the repository root.
set -e
mkdir -p logs
.venv/bin/rodin fit data/small --out runs/small40 --preset small --decoder models/small/decoder --subjects 40 \
    > logs/fit40.log 2>&1
.venv/bin/rodin train base --triplanes runs/small40 --out runs/overfit40-r20 --preset small --steps 1000 \
    --semantic models/small-1k/semantic --render-weight 20 > logs/overfit40-r20.log 2>&1
cp -r models/small-1k/prior runs/overfit40-r20/prior    # eval semantic also draws one prompt and one edit
.venv/bin/python - <<'PY'
import json
p = "runs/overfit40-r20/model_index.json"; d = json.load(open(p)); d["components"]["prior"] = "prior"
open(p, "w").write(json.dumps(d, indent=2) + "\n")
PY
.venv/bin/rodin eval semantic runs/overfit40-r20 --data data/small --steps 10 --training --subjects 40 \
    --prompts 1 --edits 1 --out benchmarks/evals/overfit40-r20-training.json > logs/eval-overfit40-r20.log 2>&1
.venv/bin/python benchmarks/probe_base.py runs/overfit40-r20 --triplanes runs/small40 --data data/small \
    --out benchmarks/evals/probe-overfit40-r20.json > logs/probe-overfit40-r20.log 2>&1
