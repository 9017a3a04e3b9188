#!/bin/bash
# Run every setting of a grid file (one JSON object a line) of dino_loop_sweep.py in parallel, then
# print the k-NN lines of each. Data are made once under $DIAG_ROOT.
set -e
export DIAG_ROOT=${DIAG_ROOT:-/tmp/diag}; PY=${PY:-python3}; LOGS=${LOGS:-$DIAG_ROOT/logs}; mkdir -p $LOGS
$PY - <<'P'  # the data sets, once, before the parallel runs
import os
from tools.recipes import synthesize
root = os.environ["DIAG_ROOT"]
for n, size in ((40, 96), (40, 128), (160, 96)):
    if not os.path.exists(f"{root}/data_{n}_{size}/dataset.json"):
        synthesize({"kind": "histo", "n": n, "seed": 0, "options": {"size": size}}, f"{root}/data_{n}_{size}")
if not os.path.exists(f"{root}/data_big/dataset.json"):
    synthesize({"kind": "histo", "n": 80, "seed": 1, "options": {"size": 128}}, f"{root}/data_big")
P
while read -r c; do
  name=$(echo "$c" | tr -dc 'a-z0-9_.')
  OMP_NUM_THREADS=1 $PY -m tools research dino_loop_sweep "$c" > "$LOGS/$name.log" 2>&1 &
done < "$1"
wait
for f in $LOGS/*.log; do echo "== $f"; grep -E "^(random|ep)" $f | grep -E "random|knn" | tail -4; done
