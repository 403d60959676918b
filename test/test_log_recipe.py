"""The new-world log recipe: native-resolution crops, and what it reads off the log (sizes, contrast)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_SIZE, tiny_config

from flowclas_ros.config import ConfigError, config_from_dict
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.training.batches import TrainingFrames
from flowclas_ros.training.log_scale import CONTRAST_CHANGE, LogScale, ground_contrast


def test_crops_are_windows_of_the_full_resolution_frame_on_the_feature_grid(toy_world, tmp_path):
    full = [2 * v for v in TINY_SIZE]  # the model infers at twice the toy frames' size
    cfg = config_from_dict(tiny_config(toy_world, model={"input_size": full},
                                       train={"crop_size": [32, 48]}), tmp_path)
    frames = TrainingFrames(cfg)
    assert frames.input_hw == (32, 48)
    batch = frames.batch(0)
    assert all(f.image.shape == (3, 32, 48) and f.label.shape == (32, 48) and f.modified for f in batch)
    rows, cols = np.mgrid[0:64, 0:80]
    rgb = np.stack([rows, cols, np.zeros_like(rows)], axis=2).astype(np.uint8)  # each pixel knows where it is
    for seed in range(20):
        window, label = frames.crop(rgb, np.zeros((64, 80), np.uint8), np.random.default_rng(seed))
        assert window.shape == (16, 24, 3) and label.shape == (16, 24)  # 32x48 at half the input scale
        top, left = int(window[0, 0, 0]), int(window[0, 0, 1])
        assert top % 8 == 0 and left % 8 == 0  # 16 px cells of the model's input, at source scale


def test_a_crop_larger_than_the_input_or_off_the_grid_is_refused(toy_world, tmp_path):
    for crop in ([128, 48], [30, 48]):
        with pytest.raises(ConfigError, match="train.crop_size"):
            config_from_dict(tiny_config(toy_world, train={"crop_size": crop}), tmp_path)


def test_crops_leave_the_config_hash_of_older_runs_alone(toy_world, tmp_path):
    plain = config_from_dict(tiny_config(toy_world), tmp_path)
    spelled = config_from_dict(tiny_config(toy_world, train={"crop_size": None}), tmp_path)
    cropped = config_from_dict(tiny_config(toy_world, train={"crop_size": [32, 48]}), tmp_path)
    assert plain.sha256() == spelled.sha256() != cropped.sha256()


def test_ground_contrast_follows_the_frames_texture(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    for name, spread in (("flat", 2), ("rough", 40)):
        (tmp_path / name / "images").mkdir(parents=True)
        for i in range(3):
            img = np.clip(120 + rng.normal(0, spread, (96, 128, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / name / "images" / f"{i}.png"), img)
    flat = ground_contrast(load_layout("generic", tmp_path / "flat"))
    rough = ground_contrast(load_layout("generic", tmp_path / "rough"))
    assert flat < 3 < 20 < rough


def test_paste_sizes_follow_the_lens_and_the_ground_distance():
    wide = LogScale(480, 5.0, focal_px=300.0, near_m=1.5, far_m=30.0, min_px=16.0, max_px=200.0)
    overrides = dict(o.split("=", 1) for o in wide.overrides(480.0))
    lo, hi = (float(v) for v in overrides["outlier_exposure.scale"].strip("[]").split(","))
    assert lo == pytest.approx(16 / 480, abs=1e-4) and hi == pytest.approx(200 / 480, abs=1e-4)
    assert overrides["outlier_exposure.procedural.min_change"] == str(CONTRAST_CHANGE[0])  # subtle ground
    assert overrides["outlier_exposure.size_sampling"] == "log_uniform"
    crop = dict(o.split("=", 1) for o in wide.overrides(240.0))  # into a half-size crop: twice the share
    assert float(crop["outlier_exposure.scale"].strip("[]").split(",")[0]) == pytest.approx(2 * lo, abs=1e-4)
    assert "fx 300 px" in wide.describe() and "min_change 8" in wide.describe()


def test_the_new_world_recipes_read_the_logs_lens_and_depth(tmp_path, monkeypatch):
    pytest.importorskip("pybullet")
    from flowclas_ros.sim.family import terrain
    from flowclas_ros.sim.generate import generate_split
    from flowclas_ros.training.recipes import logs_config, recipe_overrides

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    generate_split(tmp_path / "log", "train", 3, world="gen-3", bag=True, progress=False)
    bag = tmp_path / "log" / "bag"
    fast, notes = recipe_overrides("new-world", [bag])
    focal = 240 / np.tan(np.radians(terrain("gen-3").vfov_deg) / 2)
    assert f"fx {focal:.0f} px" in notes[1] and "cutouts" not in notes[0]  # no --bank: no cut-outs
    assert "outlier_exposure.sources.procedural=1.0" in fast and "train.crop_size" not in " ".join(fast)
    accurate, _ = recipe_overrides("new-world-accurate", [bag], bank=tmp_path)
    assert "model.input_size=[480,640]" in accurate and "train.crop_size=[240,320]" in accurate
    cfg, _ = logs_config([bag], overrides=[o for o in accurate if "sources.cutouts" not in o])
    assert cfg.model.input_size == [480, 640] and cfg.train.crop_size == [240, 320]
    assert cfg.outlier_exposure.size_sampling == "log_uniform"
    with pytest.raises(ConfigError, match="--recipe"):
        recipe_overrides("moon", [bag])
