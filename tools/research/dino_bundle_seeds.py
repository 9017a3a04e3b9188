"""The DINO learning test's setting through the bundle with another training seed.

Trains ``train.json`` with the overrides of ``tests/bundles/test_pathology_dino_pretraining.py`` and
``set_determinism(seed=SEED)``, evaluates the backbone by k-NN on the test's labelled set (600 tiles,
seed 1) against the three random encoders, and prints one line. Behind the seed table of the model card
(run there with ``OMP_NUM_THREADS=1``; the test itself runs seed 0 with 2 threads).

    OMP_NUM_THREADS=1 python -m tools research dino_bundle_seeds 1 [OUT]
"""

import importlib.util
import json
import sys
import time
from pathlib import Path

from tools.recipes import synthesize
from tools.runner import copy_bundle, run_stage

repo = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("dino_test", repo / "tests/bundles/test_pathology_dino_pretraining.py")
test = importlib.util.module_from_spec(spec)
spec.loader.exec_module(test)

seed = int(sys.argv[1])
out = Path(sys.argv[2] if len(sys.argv) > 2 else f"/tmp/dino_bundle_seed_{seed}")
data = synthesize({"kind": "histo", "n": 400, "seed": 0, "options": {"size": 96}}, out / "data")
labelled = synthesize({"kind": "histo", "n": 600, "seed": 1, "options": {"size": 96}}, out / "labelled")
root = copy_bundle(test.BUNDLE, out / test.BUNDLE)
overrides = {**test.TRAIN_OVERRIDES, "initialize": [f"$monai.utils.set_determinism(seed={seed})"]}
t0 = time.time()
run_stage({"name": "train", "config": ["train.json"], "output_dir": "train", "overrides": overrides}, root, data, out)
t1 = time.time()
run_stage({"name": "evaluate", "config": ["inference.json", "evaluate.json"], "output_dir": "eval",
           "overrides": {"arch": "resnet18", "knn_patch_size": 32, "knn_k": 10}}, root, labelled, out)
s = json.loads((out / "eval" / "summary.json").read_text())
print(f"seed {seed}: training {t1 - t0:.0f} s; k-NN accuracy {s['knn_accuracy']:.3f}, balanced accuracy "
      f"{s['knn_balanced_accuracy']:.3f}; random encoders {s['random_init']['knn_accuracy']:.3f} / "
      f"{s['random_init']['knn_balanced_accuracy']:.3f}; recall { {k: round(v, 2) for k, v in s['recall'].items()} }")
