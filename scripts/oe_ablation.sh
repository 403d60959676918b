#!/usr/bin/env bash
# OE-source ablation on the PyBullet benchmark (issue 7): same config, seeds, steps and test split.
set -u
cd /work/main
. .venv/bin/activate
COMMON="--set train.max_steps=600 --set model.score_blur_sigma=0 --set model.score_includes_logdet=true --quiet"
run() {
  name=$1; shift
  flowclas-ros train --config config/train_sim.yaml --out runs/abl_$name $COMMON "$@" > runs/abl_$name.log 2>&1 || { echo "$name: train failed"; return; }
  flowclas-ros export runs/abl_$name/checkpoint.pt --out runs/abl_$name/model.onnx >> runs/abl_$name.log 2>&1
  flowclas-ros evaluate --data data/sim/test --model runs/abl_$name/model.onnx --out reports/abl_${name}_test --json --quiet > reports/abl_${name}_test.json 2>>runs/abl_$name.log
  echo "$name done $(date +%T)"
}
mkdir -p reports
run cutouts
run procedural --set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.procedural=1
run flownegs --set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.flow_negatives=1
run all --set outlier_exposure.sources.procedural=1 --set outlier_exposure.sources.flow_negatives=1
run nfonly --set loss.contrastive_weight=0 --set outlier_exposure.enabled=false
echo ALL DONE
