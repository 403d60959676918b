#!/usr/bin/env bash
# OE-source ablation on the PyBullet benchmark (issue 7): same config, seed, steps, post-processing
# and test split for every row. Usage: scripts/oe_ablation.sh [row ...] (default: every row).
# Needs the benchmark data of config/train_sim.yaml (see docs/results.md) and the venv (`make setup`).
set -u
cd "$(dirname "$0")/.."
. .venv/bin/activate
COMMON="--set train.max_steps=600 --set model.score_blur_sigma=0 --set model.score_includes_logdet=true"
# the rows' base is the issue-7 recipe: cut-outs only, no camera augmentation (train_sim.yaml now
# holds the shipped default's, with procedural blobs and augmentation on); rows switch sources on
COMMON="$COMMON --set outlier_exposure.sources.procedural=0 --set augmentation.probability=0"
COMMON="$COMMON --set model.score_guided_radius=2 --set model.score_guided_eps=1e-3 --quiet"
# procedural blobs drawn with the same count and size range as the pasted cut-outs
MATCHED="--set outlier_exposure.procedural.count=[1,3] --set outlier_exposure.procedural.scale=[0.03,0.3]"
LARGE="--set outlier_exposure.procedural.count=[1,3] --set outlier_exposure.procedural.scale=[0.1,0.5]"
XLARGE="--set outlier_exposure.procedural.count=[2,4] --set outlier_exposure.procedural.scale=[0.15,0.6]"
PROC="--set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.procedural=1"
# flow_patches: the patch generator trains once per data source (cached, see docs/training.md)
FP_LARGE="--set outlier_exposure.flow_patches.count=[1,3] --set outlier_exposure.flow_patches.scale=[0.1,0.5]"
run() {
  name=$1; shift
  flowclas-ros train --config config/train_sim.yaml --out runs/abl_$name $COMMON "$@" > runs/abl_$name.log 2>&1 || { echo "$name: train failed"; return; }
  flowclas-ros export runs/abl_$name/checkpoint.pt --out runs/abl_$name/model.onnx >> runs/abl_$name.log 2>&1
  for split in val test; do  # val: for choosing between variants; test: the table
    flowclas-ros evaluate --data data/sim/$split --model runs/abl_$name/model.onnx --out reports/abl_${name}_$split --json --quiet > reports/abl_${name}_$split.json 2>>runs/abl_$name.log
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], *(f'{k} {d[k]:.2f}' for k in ('auprc','fpr95','auroc','mean_f1')))" reports/abl_${name}_$split.json "$name $split"
  done
}
row() {
  case $1 in
    cutouts)        run cutouts ;;
    procedural)     run procedural $PROC ;;
    procedural_matched) run procedural_matched $PROC $MATCHED ;;
    procedural_large) run procedural_large $PROC $LARGE ;;
    procedural_xlarge) run procedural_xlarge $PROC $XLARGE ;;
    flownegs)       run flownegs --set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.flow_negatives=1 ;;
    flownegs_hinge) run flownegs_hinge --set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.flow_negatives=1 --set outlier_exposure.flow_negatives.nll_margin=1.0 ;;
    flownegs_generator) [ -f runs/abl_nfonly/checkpoint.pt ] || row nfonly
                    run flownegs_generator --set outlier_exposure.sources.cutouts=0 --set outlier_exposure.sources.flow_negatives=1 --set outlier_exposure.flow_negatives.generator=$PWD/runs/abl_nfonly/checkpoint.pt ;;
    cutouts_procedural) run cutouts_procedural --set outlier_exposure.sources.procedural=1 ;;
    cutouts_procedural_large) run cutouts_procedural_large --set outlier_exposure.sources.procedural=1 $LARGE ;;
    all)            run all --set outlier_exposure.sources.procedural=1 --set outlier_exposure.sources.flow_negatives=1 ;;
    flowpatches)    run flowpatches --oe flow_patches ;;
    flowpatches_large) run flowpatches_large --oe flow_patches $FP_LARGE ;;
    procedural_flowpatches) run procedural_flowpatches --oe procedural,flow_patches ;;
    cutouts_flowpatches) run cutouts_flowpatches --oe cutouts,flow_patches ;;
    cutouts_procedural_flowpatches) run cutouts_procedural_flowpatches --oe cutouts,procedural,flow_patches ;;
    nfonly)         run nfonly --set loss.contrastive_weight=0 --set outlier_exposure.enabled=false ;;
    *) echo "unknown row $1"; exit 2 ;;
  esac
}
mkdir -p reports runs
ROWS=${*:-nfonly cutouts procedural procedural_matched procedural_large procedural_xlarge flownegs flownegs_hinge flownegs_generator cutouts_procedural cutouts_procedural_large all flowpatches flowpatches_large procedural_flowpatches cutouts_flowpatches cutouts_procedural_flowpatches}
for r in $ROWS; do row "$r"; done
