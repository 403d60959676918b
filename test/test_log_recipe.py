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
    from flowclas_ros.training.recipes import NEW_WORLD_INLIER_FPR, logs_config, recipe_overrides

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
    assert cfg.calibration.inlier_fpr == NEW_WORLD_INLIER_FPR and "0.3 % val inlier FPR" in notes[0]
    # half the cut-outs camouflaged: the base recipe's (config/train_sim.yaml), said in the note
    assert cfg.outlier_exposure.camouflage == 0.5 and "camouflage 0.5" in notes[0]
    with pytest.raises(ConfigError, match="--recipe"):
        recipe_overrides("moon", [bag])


def _rgbd_log(path, depths, focal_px: float):
    """A log as an RGB-D camera records it: image, aligned 32FC1 depth and CameraInfo per frame."""
    from test_bags import PERIOD, T0, image_msg, write_bag

    from flowclas_ros.data.rosbag import CAMERA_INFO, IMAGE, camera_info_message, header_message
    from flowclas_ros.runtime.obstacles3d import CameraIntrinsics

    rng = np.random.default_rng(1)
    h, w = depths[0].shape
    intrinsics = CameraIntrinsics(focal_px, focal_px, w / 2, h / 2, w, h)
    records = []
    for i, depth in enumerate(depths):
        t = T0 + i * PERIOD
        rgb = np.clip(110 + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        records += [("/cam/image", IMAGE, t, image_msg(t, rgb)),
                    ("/cam/depth/image", IMAGE, t, image_msg(t, depth, "32FC1")),
                    ("/cam/camera_info", CAMERA_INFO, t, camera_info_message(intrinsics, header_message(t, "cam")))]
    return write_bag(path, records)


def test_log_scale_reads_the_focal_length_and_ground_depths_of_an_rgbd_log(tmp_path, monkeypatch):
    from flowclas_ros.config.schema import DataSource
    from flowclas_ros.data.layouts import source_samples
    from flowclas_ros.training.log_scale import MAX_SCALE, OBSTACLE_SIZE_M, measure_log

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    h, w = 96, 128
    depths = []
    for i in range(4):  # ground from near (bottom rows) to far (top), sky (inf) above the horizon
        d = np.full((h, w), np.inf, np.float32)
        d[h // 3:] = np.linspace(25.0 + i, 1.5 + 0.1 * i, h - h // 3, dtype=np.float32)[:, None]
        depths.append(d)
    bag = _rgbd_log(tmp_path / "log", depths, focal_px=150.0)
    samples = source_samples(DataSource(root=str(bag), layout="rosbag2", topic="/cam/image"))
    scale = measure_log(bag, samples, cell_px=4.0)
    ground = np.concatenate([d[np.isfinite(d)] for d in depths])
    near, far = np.percentile(ground, [2, 90])
    assert scale.focal_px == 150.0 and scale.short_side_px == h
    assert scale.near_m == pytest.approx(near, abs=1e-3) and scale.far_m == pytest.approx(far, abs=1e-3)
    assert scale.min_px == pytest.approx(max(4.0, OBSTACLE_SIZE_M[0] * 150 / far), rel=1e-3)
    assert scale.max_px == pytest.approx(min(MAX_SCALE * h, OBSTACLE_SIZE_M[1] * 150 / near), rel=1e-3)
    assert "fx 150 px" in scale.describe()


def test_without_depth_the_paste_sizes_come_from_the_model_grid(tmp_path, monkeypatch):
    from test_bags import toy_bag

    from flowclas_ros.training.log_scale import MAX_SCALE
    from flowclas_ros.training.recipes import base_recipe, recipe_overrides

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rng = np.random.default_rng(2)
    frames = [np.clip(100 + rng.normal(0, 30, (96, 128, 3)), 0, 255).astype(np.uint8) for _ in range(3)]
    bag = toy_bag(tmp_path / "log", frames)  # images only: no CameraInfo, no depth
    overrides, notes = recipe_overrides("new-world", [bag])
    assert "no depth + CameraInfo" in notes[1]
    model = base_recipe()["model"]
    cell = model["backbone"]["feature_stride"] * 96 / model["input_size"][0]  # one feature cell, frame px
    derived = dict(o.split("=", 1) for o in overrides)
    lo, hi = (float(v) for v in derived["outlier_exposure.scale"].strip("[]").split(","))
    assert lo == pytest.approx(cell / 96, abs=1e-4) and hi == pytest.approx(MAX_SCALE, abs=1e-4)
    assert int(derived["outlier_exposure.procedural.min_change"]) > 8  # a rough ground: bolder blobs
