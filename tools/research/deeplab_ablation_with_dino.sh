#!/bin/bash
# DINO pretraining through the bundle (resnet18, small-scale settings), then the DeepLab ablation with 3 seeds.
set -e
# usage (repo root): OUT=results_dir [DEVICE=cpu] bash tools/research/deeplab_ablation_with_dino.sh
OUT=${OUT:-/tmp/ablation_out}; mkdir -p $OUT
export PYTHONUNBUFFERED=1
W=/tmp/abl; mkdir -p $W
python3 - <<'P'
from tools.recipes import synthesize
synthesize({"kind": "histo", "n": 120, "seed": 7, "options": {"size": 96}}, "/tmp/abl/unlabelled")
P
cp -r bundles/pathology_dino_pretraining $W/dino
cd $W/dino
python3 -m monai.bundle run --config_file configs/train.json --bundle_root . --dataset_dir $W/unlabelled \
  --datalist_keys "['training','validation','testing']" --arch resnet18 --out_dim 256 --head_hidden_dim 512 --head_bottleneck_dim 128 \
  --head_use_bn true --global_crop_size 64 --local_crop_size 32 --n_local_crops 2 --batch_size 16 --patches_per_image 4 \
  --max_epochs 30 --warmup_epochs 1 --base_lr 0.008 --weight_decay_end 0.1 --momentum_teacher 0.95 --teacher_temp 0.02 \
  --warmup_teacher_temp 0.02 --loss_def#center_momentum 0.99 --num_workers 0 --amp false > $OUT/dino_train.log 2>&1
cd -
ls -la $W/dino/models
for s in 0 1 2; do
  python3 -m tools ablation-deeplab --out $W/abl_s$s --backbone $W/dino/models/backbone.pt --seed $s --device ${DEVICE:-cuda} > $OUT/ablation_s$s.md 2>&1 &
done
wait
for s in 0 1 2; do echo "== seed $s"; tail -12 $OUT/ablation_s$s.md; cp $W/abl_s$s/ablation.json $OUT/ablation_s$s.json; done
