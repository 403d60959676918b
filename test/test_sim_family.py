"""The generated worlds (gen-N): a world is a pure function of its seed, and its labels are its renders'."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pybullet")

from flowclas_ros.runtime.labels import ANOMALY  # noqa: E402
from flowclas_ros.sim.camera import Camera  # noqa: E402
from flowclas_ros.sim.family import _draw, bag_jpeg_quality, check_world, robot_camera, terrain  # noqa: E402
from flowclas_ros.sim.placement import box_corners, yaw_matrix  # noqa: E402
from flowclas_ros.sim.planetary import PLANETARY  # noqa: E402
from flowclas_ros.sim.scenes import render_frame  # noqa: E402
from flowclas_ros.sim.textures import TEXTURE_FAMILIES, ground_texture, regolith_texture  # noqa: E402


def test_a_world_is_a_pure_function_of_its_seed():
    assert _draw(5) == _draw(5) == terrain("gen-5")
    assert _draw(5) != _draw(6)
    assert robot_camera("gen-5") == robot_camera("gen-5") != robot_camera("gen-6")
    assert bag_jpeg_quality("gen-5") == bag_jpeg_quality("gen-5")
    assert terrain("planetary") is PLANETARY and terrain("courtyard") is None
    axes = {k: [v for v in (getattr(_draw(s), k) for s in range(12))] for k in ("texture", "vfov_deg", "shadows")}
    assert len(set(axes["texture"])) >= 3 and len(set(axes["vfov_deg"])) == 12  # the axes do vary
    json.dumps(_draw(5).describe())  # the summary can record it


@pytest.mark.parametrize("name", ["moon", "gen-", "gen-x", "gen--1", "planetary2"])
def test_unknown_worlds_are_refused(name):
    with pytest.raises(ValueError, match="unknown world"):
        check_world(name)


@pytest.mark.parametrize("family", TEXTURE_FAMILIES)
def test_ground_textures_are_deterministic_and_tile(family):
    t = ground_texture(family, (0.5, 0.45, 0.4), 1.2, seed=3, size=128, tint=(0.8, 1.0, 0.7))
    assert t.shape == (128, 128, 3) and t.dtype == np.uint8
    assert np.array_equal(t, ground_texture(family, (0.5, 0.45, 0.4), 1.2, seed=3, size=128, tint=(0.8, 1.0, 0.7)))
    g = t.astype(np.float32).mean(axis=2)
    inner = np.abs(np.diff(g, axis=0)).mean()
    wrap = np.abs(g[0] - g[-1]).mean()  # across the tile's edge: no seam
    assert wrap < 3 * inner + 2


def test_planetary_ground_is_the_regolith_default():
    assert np.array_equal(PLANETARY.ground(), regolith_texture())


def _box_rect(camera: Camera, obj: dict) -> tuple[float, float, float, float]:
    """Image rectangle (col0, row0, col1, row1) of an object's box, projected with its camera."""
    size = np.asarray(obj["box_size_m"])
    corners = box_corners(-size / 2, size / 2) @ yaw_matrix(np.radians(obj["yaw_deg"])).T + obj["box_centre_m"]
    forward, right, up = camera._basis()
    rel = corners - np.asarray(camera.eye)
    p = np.stack([rel @ right, -(rel @ up), rel @ forward], axis=1)  # ROS optical: x right, y down, z ahead
    col = camera.width / 2 + camera.focal_px * p[:, 0] / p[:, 2]
    row = camera.height / 2 + camera.focal_px * p[:, 1] / p[:, 2]
    return col.min(), row.min(), col.max(), row.max()


STUDY_WORLDS = [f"gen-{i}" for i in range(1, 8)]  # the leave-worlds-out study's worlds (docs/results.md)


@pytest.mark.parametrize("world, frames", [("gen-3", (("val", 0), ("test", 1))), ("gen-11", (("val", 0), ("test", 1))),
                                           *[(w, (("test", 2),)) for w in STUDY_WORLDS if w != "gen-3"]])
def test_labels_are_the_anomalies_renders_and_lie_inside_their_boxes(world, frames):
    for split, index in frames:
        rgb, label, meta, depth = render_frame(split, index, seed=0, world=world, with_depth=True)
        assert meta["world"] == world and rgb.shape == (480, 640, 3)
        t = terrain(world)
        assert meta["camera"]["vfov_deg"] == t.vfov_deg
        anomalies = [o for o in meta["objects"] if o["role"] == "anomaly"]
        assert t.anomaly_count[0] <= len(anomalies) <= t.anomaly_count[1]
        mask = label == ANOMALY
        assert int(mask.sum()) == sum(o["pixels"] for o in anomalies) == meta["anomaly_pixels"]
        assert np.isfinite(depth[mask]).all()  # an obstacle pixel is a surface, never the sky
        camera = Camera.from_metadata(meta["camera"])
        inside = np.zeros_like(mask)
        for obj in anomalies:
            assert t.anomaly_size[0] - 1e-3 <= obj["size_m"] <= t.anomaly_size[1] + 1e-3
            c0, r0, c1, r1 = _box_rect(camera, obj)
            assert c0 >= -1 and r0 >= -1 and c1 <= 641 and r1 <= 481  # whole in view
            inside[max(0, int(r0) - 1):int(r1) + 2, max(0, int(c0) - 1):int(c1) + 2] = True
        assert not (mask & ~inside).any(), "labelled pixels outside every obstacle's projected box"


def test_train_frames_hold_no_obstacle_and_frames_depend_only_on_world_seed_split_index():
    a, label, meta = render_frame("train", 0, seed=0, world="gen-3")
    assert not (label == ANOMALY).any() and all(o["role"] == "known" for o in meta["objects"])
    render_frame("train", 1, seed=0, world="gen-4")
    b, _, _ = render_frame("train", 0, seed=0, world="gen-3")
    c, _, _ = render_frame("train", 0, seed=0, world="gen-4")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cli_renders_a_generated_world_and_records_its_axes(tmp_path):
    from flowclas_ros.cli import main

    assert main(["sim", "--world", "gen-3", "--split", "val", "-n", "2", "--camera", "robot",
                 "--out", str(tmp_path / "v")]) == 0
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    assert summary["world"] == "gen-3" and summary["world_axes"] == terrain("gen-3").describe()
    assert summary["camera"]["jpeg_quality"] == list(robot_camera("gen-3").jpeg_quality)
    with pytest.raises(SystemExit):
        main(["sim", "--world", "moon", "--split", "val", "-n", "1", "--out", str(tmp_path / "m")])


def test_a_frame_is_the_same_in_another_process():
    """No process state (hash seeds, import order, a pool's workers) enters a world or its frames."""
    code = ("import hashlib, sys; from flowclas_ros.sim.scenes import render_frame; "
            "rgb, label, meta = render_frame('test', 3, seed=0, world='gen-6'); "
            "print(hashlib.sha256(rgb.tobytes() + label.tobytes()).hexdigest(), meta['anomaly_pixels'])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    rgb, label, meta = render_frame("test", 3, seed=0, world="gen-6")
    assert out.stdout.split() == [hashlib.sha256(rgb.tobytes() + label.tobytes()).hexdigest(),
                                  str(meta["anomaly_pixels"])]
