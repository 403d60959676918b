"""Shared fixtures: a small toy world and a really trained + exported tiny FlowCLAS model.

Everything is generated on the fly (no downloads): the toy dataset by flowclas_ros.sim.toy, the
model by the real trainer on the real EfficientNet-Lite0 weights, the ONNX file by the real
exporter. Session-scoped so the suite trains once.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY_SIZE = (64, 80)  # H, W of toy frames and of the tiny model's input


def tiny_config(root: Path, **sections) -> dict:
    """A config dict for a seconds-long training run on the toy world under `root`."""
    cfg = {
        "seed": 0,
        "model": {"input_size": list(TINY_SIZE), "backbone": {"taps": [8, 16], "feature_stride": 8},
                  "flow": {"steps": 2, "hidden_channels": 32}, "projection_channels": 16},
        "data": {"train": [{"root": str(root / "train")}], "val": {"root": str(root / "val")}},
        "outlier_exposure": {"enabled": True, "bank": str(root / "oe_bank"), "probability": 0.8,
                             "count": [1, 2], "scale": [0.15, 0.4]},
        "loss": {"contrastive_weight": 1.0, "temperature": 0.1, "samples_per_class": 64},
        "train": {"batch_size": 4, "max_steps": 12, "lr": 1e-3, "checkpoint_every": 6,
                  "log_every": 3},
        "calibration": {"inlier_fpr": 0.01, "max_frames": 8},
    }
    for key, value in sections.items():
        cfg[key].update(value) if isinstance(value, dict) else cfg.__setitem__(key, value)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> Path:
    from flowclas_ros.sim.toy import make_toy_cutout_bank, make_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    make_toy_dataset(root / "train", "train", 24, seed=0, size=TINY_SIZE)
    make_toy_dataset(root / "val", "val", 8, seed=0, size=TINY_SIZE)
    make_toy_dataset(root / "test", "test", 6, seed=0, size=TINY_SIZE)
    make_toy_cutout_bank(root / "oe_bank", 16, seed=0)
    return root


@pytest.fixture(scope="session")
def trained(toy_world, tmp_path_factory) -> dict:
    """{'checkpoint', 'onnx', 'config'} of a tiny model trained with the real trainer."""
    from flowclas_ros.config import load_config
    from flowclas_ros.deploy.export import export_onnx
    from flowclas_ros.training.loop import train

    run = tmp_path_factory.mktemp("run")
    cfg_path = write_config(run / "tiny.yaml", tiny_config(toy_world))
    cfg = load_config(cfg_path)
    ckpt = train(cfg, run / "out", progress=False)
    onnx_path = run / "tiny.onnx"
    export_onnx(ckpt, onnx_path)
    return {"checkpoint": ckpt, "onnx": onnx_path, "config": cfg, "config_path": cfg_path}
