"""Every layout's own label coding is honoured where labels are read: training batches, the
calibration, the evaluator and the int8 calibration frames.

A Cityscapes tree (trainIds 0-18 are all inlier classes, 255 unlabelled) is the case that broke:
read with the generic 0/1/255 coding, sidewalk (trainId 1) becomes "anomaly" and trainIds > 1 are
refused. The test trains a few real steps and calibrates on such a tree.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_SIZE, tiny_config

from flowclas_ros.config import config_from_dict
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.labels import read_label_or_inlier
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.runtime.labels import ANOMALY, INLIER, VOID
from flowclas_ros.training.batches import TrainingFrames
from flowclas_ros.training.calibration import calibration_samples
from flowclas_ros.training.int8_features import calibration_frames
from flowclas_ros.training.loop import train

SIDEWALK, CAR, UNLABELLED = 1, 13, 255


def _cityscapes_from(toy: Path, root: Path, n: int) -> None:
    """Cityscapes files (leftImg8bit + gtFine labelTrainIds) made from toy frames: a road
    (trainId 0), a sidewalk strip (1), a car (13) and an unlabelled band (255)."""
    h, w = TINY_SIZE
    for i, sample in enumerate(load_layout("generic", toy)[:n]):
        frame = f"toycity_000000_{i:06d}"
        image_dir = root / "leftImg8bit" / "train" / "toycity"
        label_dir = root / "gtFine" / "train" / "toycity"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        rgb = read_image_rgb(sample.image_path)
        cv2.imwrite(str(image_dir / f"{frame}_leftImg8bit.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        ids = np.zeros((h, w), np.uint8)
        ids[h // 2:, : w // 3] = SIDEWALK
        ids[h // 3: h // 2, w // 2:] = CAR
        ids[: h // 8] = UNLABELLED
        cv2.imwrite(str(label_dir / f"{frame}_gtFine_labelTrainIds.png"), ids)


@pytest.fixture(scope="module")
def cityscapes_cfg(toy_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    _cityscapes_from(toy_world / "train", root / "train", 8)
    _cityscapes_from(toy_world / "val", root / "val", 4)
    cfg = tiny_config(toy_world, data={"train": [{"root": str(root / "train"), "layout": "cityscapes"}],
                                       "val": {"root": str(root / "val"), "layout": "cityscapes"}},
                      train={"batch_size": 2, "max_steps": 3, "checkpoint_every": 3, "log_every": 1})
    return config_from_dict(cfg)


def test_training_frames_decode_cityscapes_train_ids(cityscapes_cfg):
    frames = TrainingFrames(cityscapes_cfg)
    h, w = TINY_SIZE
    for index in range(len(frames)):
        _, label = frames.read(index)
        assert set(np.unique(label)) == {INLIER, VOID}, "no Cityscapes class is an anomaly"
        assert (label[h // 2:, : w // 3] == INLIER).all()  # sidewalk: inlier, not anomaly
        assert (label[: h // 8] == VOID).all()


def test_trains_and_calibrates_on_a_cityscapes_layout(cityscapes_cfg, tmp_path):
    from flowclas_ros.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(train(cityscapes_cfg, tmp_path / "run", progress=False))
    cal = ckpt["calibration"]
    assert ckpt["step"] == 3 and cal["threshold"] == 1.0 and cal["score_scale"] > 0
    samples, _ = calibration_samples(cityscapes_cfg)
    assert len(samples) == cal["frames"] == 4
    h, w = TINY_SIZE
    inlier_per_frame = h * w - (h // 8) * w  # everything but the unlabelled band
    assert cal["inlier_pixels"] == 4 * inlier_per_frame


def test_int8_calibration_frames_use_the_layout_coding(cityscapes_cfg):
    samples = load_layout("cityscapes", cityscapes_cfg.data.val.root)
    frames = calibration_frames(samples, 2, TINY_SIZE, (0.5,) * 3, (0.5,) * 3, "stretch")
    h, w = TINY_SIZE
    for _, inlier in frames:
        assert inlier.sum() == h * w - (h // 8) * w
    label = read_label_or_inlier(samples[0], TINY_SIZE)
    assert ANOMALY not in np.unique(label)
