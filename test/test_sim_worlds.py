"""The second world (planetary) and the generalisation split (reserved objects), rendered for real."""
from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("pybullet")

from flowclas_ros.runtime.labels import ANOMALY  # noqa: E402
from flowclas_ros.sim.planetary import paint_sky, rock_mesh  # noqa: E402
from flowclas_ros.sim.scenes import WORLDS, render_frame  # noqa: E402
from flowclas_ros.sim.textures import regolith_texture  # noqa: E402
from flowclas_ros.sim.world import RESERVED_OBJECTS  # noqa: E402

RESERVED_NAMES = {a.name for a in RESERVED_OBJECTS}


def _anomalies(meta: dict) -> list[dict]:
    return [o for o in meta["objects"] if o["role"] == "anomaly"]


def test_planetary_train_frames_hold_rocks_and_no_anomaly():
    for index in range(3):
        rgb, label, meta = render_frame("train", index, seed=0, world="planetary")
        assert meta["world"] == "planetary" and not _anomalies(meta)
        assert not (label == ANOMALY).any()
        assert all(o["name"].startswith("rock/") or o["name"] == "husky/husky.urdf" for o in meta["objects"])
    assert any(o["name"].startswith("rock/") for o in meta["objects"])


def test_planetary_test_obstacles_are_reserved_urdfs_labelled_where_seen():
    seen_far = False
    for index in range(4):
        rgb, label, meta = render_frame("test", index, seed=0, world="planetary")
        anomalies = _anomalies(meta)
        assert 1 <= len(anomalies) <= 3
        for obj in anomalies:
            assert 500 <= int(re.fullmatch(r"random_urdfs/(\d{3})", obj["name"]).group(1)) <= 999
            assert 1.5 <= obj["distance_m"] <= 20.0 and 0.1 <= obj["size_m"] <= 1.0 + 1e-6
            seen_far |= obj["distance_m"] > 7.0
        assert int((label == ANOMALY).sum()) == sum(o["pixels"] for o in anomalies) == meta["anomaly_pixels"]
    assert seen_far, "obstacles are drawn out to 20 m: some of 4 frames lie beyond the courtyard's 7 m"


def test_worlds_differ_and_each_frame_depends_only_on_seed_split_index():
    a, _, _ = render_frame("val", 0, seed=0, world="planetary")
    b, _, _ = render_frame("val", 0, seed=0, world="courtyard")
    render_frame("val", 1, seed=0, world="planetary")
    c, _, _ = render_frame("val", 0, seed=0, world="planetary")
    assert np.array_equal(a, c) and not np.array_equal(a, b)
    # the planetary ground is red-brown, the courtyard floor grey-blue
    assert a[300:].reshape(-1, 3).mean(0)[0] > a[300:].reshape(-1, 3).mean(0)[2] + 20


@pytest.mark.parametrize("world", WORLDS)
def test_reserved_split_uses_only_the_reserved_named_objects(world):
    for index in range(2):
        _, label, meta = render_frame("reserved", index, seed=0, world=world)
        assert {o["name"] for o in _anomalies(meta)} <= RESERVED_NAMES
        assert meta["split"] == "reserved"


def test_unknown_world_is_refused():
    with pytest.raises(ValueError, match="unknown world 'moon'"):
        render_frame("val", 0, seed=0, world="moon")


def test_generated_world_assets_are_deterministic_and_bounded():
    t = regolith_texture(64, seed=0)
    assert t.shape == (64, 64, 3) and t.dtype == np.uint8 and np.array_equal(t, regolith_texture(64, seed=0))
    vertices, indices = rock_mesh(np.random.default_rng(0))
    assert vertices.shape == (162, 3) and len(indices) == 320 * 3 and max(indices) == 161
    assert np.isclose(np.ptp(vertices, axis=0).max(), 1.0) and vertices[:, 2].min() == 0.0


def test_sky_is_brighter_at_the_horizon_than_overhead():
    from flowclas_ros.sim.camera import Camera

    camera = Camera.from_yaw_pitch((0.0, 0.0, 1.0), 0.0, 40.0)  # looking up: horizon at the bottom
    rgb = paint_sky(np.zeros((480, 640, 3), np.uint8), -np.ones((480, 640), np.int32), camera)
    assert rgb[-1].mean() > rgb[0].mean() + 20
