"""The depth region stage (runtime/depth_regions.py) on scenes whose depth is ray-cast exactly: a
plain face standing on the ground is lifted as a whole, the wall behind it and an inlier object
beside a flagged one are not, and a frame without depth or ground is left as it came."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flowclas_ros.runtime.depth_regions import (
    DEPTH_REGIONS_KEY,
    DepthRegions,
    DepthRegionsError,
    depth_regions_of,
    lift_depth_regions,
)
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics

W, H = 320, 240
K = CameraIntrinsics(fx=250.0, fy=250.0, cx=W / 2, cy=H / 2, width=W, height=H)
CAMERA_HEIGHT = 1.0
PITCH = np.radians(15.0)  # looking down


def _scene(boxes: list[tuple[float, float, float, float]], wall_at: float = 9.0
           ) -> tuple[np.ndarray, np.ndarray]:
    """z-depth and an id map (0 floor, 1 wall, 2.. boxes) of a floor, a wall ``wall_at`` metres
    ahead reaching above the frame, and fronto-parallel boxes (x_centre, distance, width, height)
    standing on the floor."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    x, y = (u - K.cx) / K.fx, (v - K.cy) / K.fy
    c, s = np.cos(PITCH), np.sin(PITCH)
    # world direction of the optical ray (x, y, 1): right, forward, up components
    d_right, d_fwd, d_up = x, c - y * s, -s - y * c
    t_best = np.full((H, W), np.inf)
    ids = np.zeros((H, W), dtype=np.int32)
    floor_t = np.where(d_up < 0, CAMERA_HEIGHT / np.maximum(-d_up, 1e-9), np.inf)
    t_best = np.minimum(t_best, floor_t)
    wall_t = np.where(d_fwd > 0, wall_at / np.maximum(d_fwd, 1e-9), np.inf)
    wall_hit = wall_t < t_best
    t_best, ids = np.where(wall_hit, wall_t, t_best), np.where(wall_hit, 1, ids)
    for k, (xc, dist, width, height) in enumerate(boxes):
        t = np.where(d_fwd > 0, dist / np.maximum(d_fwd, 1e-9), np.inf)
        px, pz = t * d_right, CAMERA_HEIGHT + t * d_up
        hit = (np.abs(px - xc) <= width / 2) & (pz >= 0) & (pz <= height) & (t < t_best)
        t_best, ids = np.where(hit, t, t_best), np.where(hit, k + 2, ids)
    z = (t_best * 1.0).astype(np.float32)  # the optical ray (x, y, 1) has unit z: t is z-depth
    return z, ids


def test_the_scene_helper_puts_the_floor_below_and_the_wall_above() -> None:
    z, ids = _scene([(0.0, 3.0, 1.0, 0.8)])
    assert ids[-1, W // 2] == 0 and ids[0, W // 2] == 1 and (ids == 2).sum() > 1000
    assert np.isfinite(z).all()


def test_a_plain_face_standing_on_the_ground_is_lifted_whole_and_the_wall_is_not() -> None:
    z, ids = _scene([(0.0, 3.0, 1.0, 0.8)])
    score = np.where(ids == 1, 0.45, 0.1).astype(np.float32)  # wall reads as wall-ish
    face = ids == 2
    score[face] = 0.5  # the face reads as wall too ...
    cols = np.nonzero(face)[1]
    # ... but a piece of it is flagged, as the flow flags a large face: in pieces
    score[face & (np.arange(W)[None, :] < cols.min() + 0.3 * (cols.max() - cols.min()))] = 1.6
    out = lift_depth_regions(score, z, K, DepthRegions(quantile=0.9, stride=1))
    assert out.reason == "lifted" and out.segments == 1
    assert (out.score[face] >= 1.0).mean() > 0.95  # the face is flagged as a whole
    np.testing.assert_array_equal(out.score[ids == 1], score[ids == 1])  # the wall is untouched
    np.testing.assert_array_equal(out.score[ids == 0], score[ids == 0])  # the floor too
    assert out.plane is not None and abs(out.plane[1] - CAMERA_HEIGHT) < 0.01  # the fitted height


def test_an_inlier_object_beside_a_flagged_obstacle_keeps_its_own_scores() -> None:
    # an obstacle in front, an inlier object right behind it and touching it in the image
    z, ids = _scene([(-0.3, 3.0, 0.6, 0.6), (0.4, 4.5, 1.2, 1.0)])
    score = np.full(z.shape, 0.1, dtype=np.float32)
    score[ids == 2] = 1.5  # the obstacle: flagged
    score[ids == 3] = 0.2  # the inlier object: low scores (texture the flow knows)
    out = lift_depth_regions(score, z, K, DepthRegions(stride=1))
    np.testing.assert_array_equal(out.score[ids == 3], score[ids == 3])  # depth separates them
    assert (out.score[ids == 2] >= 1.5).all()


def test_stride_two_lifts_the_same_object() -> None:
    z, ids = _scene([(0.0, 3.0, 1.0, 0.8)])
    score = np.where(ids == 2, 1.2, 0.1).astype(np.float32)
    score[(ids == 2) & (np.arange(W)[None, :] % 3 == 0)] = 0.4
    out = lift_depth_regions(score, z, K, DepthRegions(quantile=0.75, stride=2))
    assert out.reason == "lifted" and (out.score[ids == 2] >= 1.0).mean() > 0.95


def test_too_large_or_unbounded_segments_are_not_objects() -> None:
    z, ids = _scene([(0.0, 4.0, 4.0, 0.8)])  # a 4 m wide slab: wider than max_extent
    score = np.where(ids == 2, 0.5, 0.1).astype(np.float32)
    out = lift_depth_regions(score, z, K, DepthRegions(max_extent=2.5, stride=1))
    assert out.reason == "no_segment"
    np.testing.assert_array_equal(out.score, score)
    z, ids = _scene([(0.0, 2.0, 0.8, 5.0)])  # a pillar reaching above the frame
    out = lift_depth_regions(np.where(ids == 2, 0.5, 0.1).astype(np.float32), z, K, DepthRegions(stride=1))
    assert out.reason == "no_segment"


def test_holes_and_missing_ground_leave_the_score_unchanged() -> None:
    score = np.random.default_rng(0).random((H, W), dtype=np.float32)
    out = lift_depth_regions(score, np.full((H, W), np.nan, np.float32), K, DepthRegions())
    assert out.reason == "no_ground"
    np.testing.assert_array_equal(out.score, score)
    z, _ = _scene([(0.0, 3.0, 1.0, 0.8)])
    with pytest.raises(ValueError, match="differ in size"):
        lift_depth_regions(score, z[:-1], K, DepthRegions())


def test_the_inputs_are_not_modified() -> None:
    z, ids = _scene([(0.0, 3.0, 1.0, 0.8)])
    score = np.where(ids == 2, 1.2, 0.1).astype(np.float32)
    z0, s0 = z.copy(), score.copy()
    lift_depth_regions(score, z, K, DepthRegions())
    np.testing.assert_array_equal(z, z0)
    np.testing.assert_array_equal(score, s0)


def test_settings_are_validated_naming_the_key() -> None:
    with pytest.raises(DepthRegionsError, match="quantile"):
        DepthRegions(quantile=1.5)
    with pytest.raises(DepthRegionsError, match="unknown key.*colour"):
        DepthRegions.from_dict({"colour": 1})
    with pytest.raises(DepthRegionsError, match="stride"):
        DepthRegions.from_dict({"stride": 1.5})
    with pytest.raises(DepthRegionsError, match="max_top"):
        DepthRegions.from_dict({"max_top": "high"})
    with pytest.raises(DepthRegionsError, match="not JSON"):
        DepthRegions.from_json("{")
    stage = DepthRegions(quantile=0.5, stride=1)
    assert depth_regions_of({DEPTH_REGIONS_KEY: stage.to_json()}, "m.onnx") == stage
    assert depth_regions_of({}, "m.onnx") is None
    assert json.loads(stage.to_json())["quantile"] == 0.5


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (48, 64)])
def test_any_depth_image_gives_a_score_map_and_never_lowers_a_score(shape) -> None:
    """Whatever a driver sends (holes everywhere, inf, zeros, negative or huge values, tiny
    frames): the stage answers with a map of the same size that is never below the input."""
    rng = np.random.default_rng(sum(shape))
    h, w = shape
    k = CameraIntrinsics(fx=50.0, fy=50.0, cx=w / 2, cy=h / 2, width=w, height=h)
    score = rng.random(shape, dtype=np.float32)
    for depth in (np.full(shape, np.nan, np.float32), np.zeros(shape, np.float32),
                  np.full(shape, np.inf, np.float32), -rng.random(shape, dtype=np.float32),
                  rng.random(shape, dtype=np.float32) * 1e4, rng.random(shape, dtype=np.float32) * 5):
        for stride in (1, 2, 8):
            out = lift_depth_regions(score, depth, k, DepthRegions(stride=stride, min_px=1))
            assert out.score.shape == shape and out.score.dtype == np.float32
            assert (out.score >= score).all() and out.reason in ("lifted", "no_segment", "no_ground")
