"""The main job (`make demo`): the real detector node with the shipped default model
(models/flowclas_default.onnx) on a camera stream of PyBullet frames over DDS, with per-frame
latency, obstacle counts and an overlay montage. Without a default model (e.g. deleted), it first
trains a small model on the procedural toy world (about a minute on a 2-core CPU, cached in
.cache/demo/) and streams toy frames instead.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from flowclas_ros.runtime.model_info import ModelFileError, resolve_model_path

log = logging.getLogger("flowclas_ros.tools.demo")

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

    from flowclas_ros.config import load_config
    from flowclas_ros.deploy.export import check_parity, export_onnx, parity_images
    from flowclas_ros.sim.toy import make_toy_cutout_bank, make_toy_dataset
    from flowclas_ros.training.loop import train

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


def sample_frames(n: int, source: str, size: tuple[int, int] = (480, 640)) -> list[tuple[np.ndarray, np.ndarray]]:
    """Camera-sized frames (with labels) holding obstacles the model never saw in training:
    rendered on the fly by the PyBullet benchmark world (`sim`, for the shipped model; seed 7, not
    a benchmark seed) or by the procedural toy world (`toy`, for the demo's toy model)."""
    if source == "sim":
        from flowclas_ros.sim.scenes import render_frame

        return [render_frame("test", i, seed=7)[:2] for i in range(n)]
    from flowclas_ros.data.files import read_image_rgb
    from flowclas_ros.data.generic import generic_layout
    from flowclas_ros.data.labels import read_label
    from flowclas_ros.sim.toy import make_toy_dataset

    root = CACHE / f"stream_{size[1]}x{size[0]}"
    if not (root / "images").is_dir() or len(list((root / "images").iterdir())) < n:
        make_toy_dataset(root, "test", n, seed=1, size=size)
    return [(read_image_rgb(s.image_path), read_label(s.label_path)) for s in generic_layout(root)[:n]]


def _gt_objects(label: np.ndarray) -> int:
    return cv2.connectedComponents((label == 1).astype(np.uint8), connectivity=8)[0] - 1


def run_demo(model: Optional[str], out: Path, frames: int = 12, rate_hz: float = 10.0,
             live: bool = True) -> int:
    """Live: the real node + a DDS camera source + a viewer. Without the ROS 2 wheels (or with
    live=False) the same frames go through the Detector in-process, and the demo says so."""
    from flowclas_ros.runtime.visualize import montage

    source = "sim"
    try:
        model_path = resolve_model_path(model)
    except ModelFileError:
        if model:
            raise
        print("[demo] no default model found: building a toy model on the procedural toy world")
        model_path, source = build_toy_model(), "toy"
    print(f"[demo] rendering {frames} sample frames ({'PyBullet benchmark world' if source == 'sim' else 'toy world'})")
    stream = sample_frames(frames, source)
    if importlib.util.find_spec("rclpy") is None:  # ROS 2 wheels absent; ros/ is the rclpy importer
        if live:
            print("[demo] ROS 2 (rclpy) is not installed: running the detector in-process instead "
                  "(pip install -e '.[ros]' for the live node demo)")
        live = False
    if live:
        from flowclas_ros.ros.demo import run_live

        print(f"[demo] starting the flowclas_detector node with {model_path}; publishing "
              f"{len(stream)} frames of {stream[0][0].shape[1]}x{stream[0][0].shape[0]} at {rate_hz:g} Hz")
        run = run_live(model_path, [rgb for rgb, _ in stream], rate_hz=rate_hz)
        for r in run.results:
            print(f"[demo] frame {r.index:3d}: latency {r.latency_ms:6.1f} ms (stamp -> overlay)  "
                  f"obstacles {r.obstacles} (ground truth {_gt_objects(stream[r.index][1])})")
        lat = [r.latency_ms for r in run.results]
        print(f"[demo] {len(run.results)}/{run.sent} frames answered; latency p50 "
              f"{np.median(lat) if lat else float('nan'):.1f} ms, max {max(lat, default=float('nan')):.1f} ms")
        d = run.diagnostics
        if d:
            print(f"[demo] node diagnostics: backend {d.get('backend')}, processed {d.get('processed')}, "
                  f"dropped {d.get('dropped')}, processing p50 {d.get('processing_ms_p50')} ms")
        tiles = [r.overlay for r in run.results]
        if not tiles:
            print(run.node_log)
            return 1
    else:
        from flowclas_ros.deploy.open_model import open_detector
        from flowclas_ros.runtime.visualize import render_overlay

        det = open_detector(model_path, providers=("cpu",), min_area=20)
        tiles = []
        for i, (rgb, label) in enumerate(stream):
            d = det.detect(rgb, "rgb8")
            print(f"[demo] frame {i:3d}: {d.timings_ms['total']:6.1f} ms  obstacles "
                  f"{len(d.obstacles)} (ground truth {_gt_objects(label)})")
            tiles.append(render_overlay(rgb, d.heatmap, d.mask, det.threshold))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "overlay_montage.png"
    small = [cv2.resize(t, (320, 240), interpolation=cv2.INTER_AREA) for t in tiles]
    cv2.imwrite(str(path), montage(small, columns=4))
    print(f"[demo] overlay montage: {path}")
    return 0
