#!/bin/sh
# The over-fitting check of BENCHMARKS.md ("Where the gap is"): a base trained on the first 40 subjects of
# data/small (37 in the training split) for 1,000 steps of 16, then read by the judge on those same
# subjects. Can the base draw the subjects it was trained on, given their z?
#
#   benchmarks/overfit_check.sh NAME [rodin train base options]
#
# e.g. `benchmarks/overfit_check.sh r20 --render-weight 20`, `benchmarks/overfit_check.sh plain` (the
# reference). Writes runs/overfit40-NAME and benchmarks/evals/overfit40-NAME-training.json (and the probe's
# probe-overfit40-NAME.json). Needs data/small (models/small-1k/MODEL_CARD.md gives the command; the first
# 40 subjects are enough). Run from the repository root. TRIPLANES=RUN trains on another fit of the same 40
# subjects (e.g. one fitted with other `rodin fit --set` settings) instead of runs/small40. Its figures
# (2026-12-02/03) came from the small preset's base recipe of those days, v-prediction without a mean-planes
# head and guidance 2, which RECIPE and GUIDANCE pin; options after NAME override RECIPE (`--prediction sample`).
set -e
name=$1
shift
model=runs/overfit40-$name
planes=${TRIPLANES:-runs/small40}
mkdir -p logs
if [ "$planes" = runs/small40 ] && [ ! -f runs/small40/metrics.json ]; then
    .venv/bin/rodin fit data/small --out runs/small40 --preset small --decoder models/small/decoder --subjects 40 \
        > logs/fit40.log 2>&1
fi
.venv/bin/rodin train base --triplanes "$planes" --out "$model" --preset small --steps 1000 \
    --semantic models/small-1k/semantic ${RECIPE:---prediction v_prediction --no-mean-planes} "$@" \
    > "logs/overfit40-$name.log" 2>&1
rm -rf "$model/prior"
cp -r models/small-1k/prior "$model/prior"    # eval semantic also draws one prompt and one edit
.venv/bin/python - "$model/model_index.json" <<'PY'
import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["components"]["prior"] = "prior"
open(p, "w").write(json.dumps(d, indent=2) + "\n")
PY
.venv/bin/rodin eval semantic "$model" --data data/small --steps 10 --training --subjects 40 \
    --prompts 1 --edits 1 --guidance "${GUIDANCE:-2}" --out "benchmarks/evals/overfit40-$name-training.json" > "logs/eval-overfit40-$name.log" 2>&1
.venv/bin/python benchmarks/probe_base.py "$model" --triplanes "$planes" --data data/small \
    --out "benchmarks/evals/probe-overfit40-$name.json" > "logs/probe-overfit40-$name.log" 2>&1
