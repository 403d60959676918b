"""The main job until the ROS node lands: run the detector on sample frames and save an overlay
montage. With no shipped model yet, it trains a small model on the procedural toy world first
(about a minute on a 2-core CPU, cached in .cache/demo/), so the whole pipeline — generate, train,
export with a parity check, detect — runs on a fresh clone with nothing downloaded.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .runtime.model_info import ModelFileError, resolve_model_path

log = logging.getLogger("flowclas_ros.demo")

CACHE = Path(".cache") / "demo"

TOY_CONFIG = {
    "seed": 0,
    "model": {"input_size": [128, 160], "backbone": {"taps": [8, 16], "feature_stride": 8},
              "flow": {"steps": 4, "hidden_channels": 64}, "projection_channels": 32},
    "data": {"train": [{"root": "toy/train"}], "val": {"root": "toy/val"}},
    "outlier_exposure": {"enabled": True, "bank": "toy/oe_bank", "probability": 0.7,
                         "count": [1, 2], "scale": [0.1, 0.35]},
    "loss": {"contrastive_weight": 1.0, "temperature": 0.1, "samples_per_class": 128},
    "train": {"batch_size": 8, "max_steps": 300, "lr": 1e-3, "checkpoint_every": 100},
}


def build_toy_model(cache: Path = CACHE) -> Path:
    """Generate the toy world, train, export with parity check; reuse a previous result."""
    import yaml

    from .config import load_config
    from .data.toy import make_toy_cutout_bank, make_toy_dataset
    from .export import check_parity, export_onnx, parity_images
    from .train import train

    onnx_path = cache / "toy_model.onnx"
    if onnx_path.is_file():
        return onnx_path
    cache.mkdir(parents=True, exist_ok=True)
    toy = cache / "toy"
    if not (toy / "oe_bank").is_dir():
        print("[demo] generating the toy world (train 200, val 20, test 20 frames, 60 OE cut-outs)")
        for split, n in (("train", 200), ("val", 20), ("test", 20)):
            make_toy_dataset(toy / split, split, n, seed=0, size=(128, 160))
        make_toy_cutout_bank(toy / "oe_bank", 60, seed=0)
    cfg_path = cache / "toy.yaml"
    cfg_path.write_text(yaml.safe_dump(TOY_CONFIG, sort_keys=False))
    cfg = load_config(cfg_path)
    print(f"[demo] training FlowCLAS on the toy world ({cfg.train.max_steps} steps, CPU)")
    t0 = time.time()
    ckpt = train(cfg, cache / "run", resume=True)
    print(f"[demo] trained in {time.time() - t0:.0f} s")
    tmp = cache / "toy_model.tmp.onnx"
    export_onnx(ckpt, tmp)
    res = check_parity(ckpt, tmp, parity_images(cfg, 4))
    print(f"[demo] exported; ONNX Runtime vs torch max |diff| = {res['max_abs_diff']:.2g} "
          f"({res['relative']:.2g} of the score range)")
    tmp.replace(onnx_path)
    return onnx_path


def run_demo(model: Optional[str], out: Path, frames: int = 12) -> int:
    from .data.layouts import generic_layout, read_image_rgb, read_label
    from .runtime.detector import Detector
    from .runtime.visualize import montage, render_overlay

    try:
        model_path = resolve_model_path(model)
    except ModelFileError:
        if model:
            raise
        print("[demo] no shipped default model yet: building a toy model")
        model_path = build_toy_model()
    det = Detector(model_path, providers=("cpu",), min_area=10)
    print(f"[demo] model {model_path} (version {det.info.model_version}, backend "
          f"{det.backend.name} {det.providers}, threshold {det.threshold:g})")
    test_dir = CACHE / "toy" / "test"
    if not test_dir.is_dir():
        from .data.toy import make_toy_dataset

        make_toy_dataset(test_dir, "test", frames, seed=0, size=(128, 160))
    samples = generic_layout(test_dir)[:frames]
    tiles, lat = [], []
    for s in samples:
        rgb = read_image_rgb(s.image_path)
        d = det.detect(rgb, "rgb8")
        lat.append(d.timings_ms["total"])
        gt = read_label(s.label_path) if s.label_path else np.zeros(rgb.shape[:2], np.uint8)
        n_gt = cv2.connectedComponents((gt == 1).astype(np.uint8), connectivity=8)[0] - 1
        print(f"[demo] {s.id}: {d.timings_ms['total']:6.1f} ms  obstacles {len(d.obstacles)} "
              f"(ground truth {n_gt})  peak score {float(d.heatmap.max()):.2f}")
        tiles.append(render_overlay(rgb, d.heatmap, d.mask, det.threshold))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "overlay_montage.png"
    cv2.imwrite(str(path), montage(tiles, columns=4))
    print(f"[demo] {len(lat)} frames, latency p50 {np.median(lat):.1f} ms; montage: {path}")
    return 0
