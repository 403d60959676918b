"""runtime.obstacles3d: depth decoding, back-projection, decimation, boxes and wire layouts,
checked against numbers worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest
from cloud_reading import cloud_points

from flowclas_ros.runtime.images import ImageError, image_msg_fields
from flowclas_ros.runtime.obstacles3d import (
    CUBE,
    DELETEALL,
    POINT_STEP,
    TEXT_VIEW_FACING,
    CameraIntrinsics,
    DepthError,
    back_project,
    camera_info_fields,
    cloud_msg_fields,
    depth_from_fields,
    depth_to_metres,
    obstacle_boxes,
    obstacle_markers,
)

K = CameraIntrinsics(fx=100.0, fy=50.0, cx=4.0, cy=3.0, width=8, height=6)


def test_pixels_back_project_through_k_exactly():
    depth = np.full((6, 8), 2.0, np.float32)
    mask = np.zeros((6, 8), np.uint8)
    mask[3, 4] = mask[0, 0] = mask[5, 7] = 255
    score = np.arange(48, dtype=np.float32).reshape(6, 8)
    pts = back_project(mask, depth, K, score)
    # raster order: (row 0, col 0), (3, 4), (5, 7)
    np.testing.assert_allclose(pts, [[(0 - 4) * 2 / 100, (0 - 3) * 2 / 50, 2.0, 0.0],
                                     [0.0, 0.0, 2.0, 28.0],
                                     [(7 - 4) * 2 / 100, (5 - 3) * 2 / 50, 2.0, 47.0]], rtol=1e-6)
    assert pts.dtype == np.float32


def test_pixels_without_a_reading_are_skipped_in_both_encodings():
    mm = np.array([[0, 1500], [2000, 65535]], np.uint16)
    np.testing.assert_allclose(depth_to_metres(mm, "16UC1"), [[np.nan, 1.5], [2.0, 65.535]])
    np.testing.assert_allclose(depth_to_metres(mm, "16UC1", depth_scale=0.0001)[0, 1], 0.15)
    m = np.array([[np.nan, np.inf], [-np.inf, 0.0], [-1.0, 3.25]], np.float32)
    np.testing.assert_array_equal(np.isnan(depth_to_metres(m, "32FC1")),
                                  [[True, True], [True, True], [True, False]])
    k = CameraIntrinsics(1.0, 1.0, 0.0, 0.0, 2, 3)
    pts = back_project(np.full((3, 2), 255, np.uint8), m, k)
    np.testing.assert_allclose(pts[:, :3], [[3.25, 2 * 3.25, 3.25]])


def test_the_same_depth_from_16uc1_and_32fc1_messages():
    metres = np.array([[1.0, 0.0], [2.5, 7.25]], np.float32)
    mm = np.round(metres * 1000).astype(np.uint16)
    a = depth_from_fields(**_fields(mm, "16UC1"))
    b = depth_from_fields(**_fields(np.where(metres > 0, metres, np.nan).astype(np.float32), "32FC1"))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b)
    with pytest.raises(DepthError) as err:
        depth_from_fields(**_fields(np.zeros((2, 2), np.uint8), "mono8"))
    assert err.value.kind == "depth_encoding" and "16UC1" in str(err.value)
    bad = _fields(mm, "16UC1")
    bad["data"] = bad["data"][:3]
    with pytest.raises(ImageError):
        depth_from_fields(**bad)


def _fields(array: np.ndarray, encoding: str) -> dict:
    f = image_msg_fields(array, encoding)
    return {k: f[k] for k in ("data", "height", "width", "encoding", "step", "is_bigendian")}


def test_decimation_is_bounded_deterministic_and_spread():
    depth = np.full((60, 80), 3.0, np.float32)
    mask = np.zeros((60, 80), np.uint8)
    mask[:, :40] = 255  # 2400 pixels on the left
    mask[50:, 70:] = 255  # 100 on the right
    k = CameraIntrinsics(100.0, 100.0, 40.0, 30.0, 80, 60)
    pts = back_project(mask, depth, k, max_points=250)
    assert len(pts) == 250
    np.testing.assert_array_equal(pts, back_project(mask, depth, k, max_points=250))
    right = np.count_nonzero(pts[:, 0] > 0.5)
    assert 5 <= right <= 15  # ~ its 4 % share of the pixels
    assert len(back_project(mask, depth, k, max_points=10_000)) == 2500


def test_size_mismatch_and_bad_camera_info_are_refused():
    with pytest.raises(DepthError) as err:
        back_project(np.zeros((6, 8)), np.zeros((3, 4), np.float32), K)
    assert err.value.kind == "depth_size_mismatch"
    with pytest.raises(DepthError) as err:
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)
    assert err.value.kind == "bad_camera_info" and "uncalibrated" in str(err.value)
    with pytest.raises(DepthError):
        CameraIntrinsics.from_k([1.0, 0, 1, 0, float("nan"), 1, 0, 0, 1], 640, 480)


def test_one_box_per_component_nearest_first():
    depth = np.full((60, 80), np.nan, np.float32)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:20, 10:20] = 255
    depth[10:20, 10:20] = 4.0
    mask[30:50, 50:70] = 255
    depth[30:50, 50:70] = 2.0
    mask[0, 79] = 255  # a component without depth: no box
    k = CameraIntrinsics(100.0, 100.0, 40.0, 30.0, 80, 60)
    near, far = obstacle_boxes(mask, depth, k)
    assert (near.pixels, far.pixels) == (400, 100)
    assert near.distance_m < far.distance_m
    # rows 30..49 / cols 50..69 at z 2: x = (c-40)*0.02, y = (r-30)*0.02; trimmed 5 % a side
    lo_x, hi_x = np.quantile((np.arange(50, 70) - 40) * 0.02, [0.05, 0.95])
    assert near.centre[0] == pytest.approx((lo_x + hi_x) / 2, abs=1e-5)
    assert near.centre[2] == pytest.approx(2.0) and near.size[2] == pytest.approx(0.05)  # min size
    assert near.size[0] == pytest.approx(hi_x - lo_x, abs=1e-5)
    expected = np.median(np.linalg.norm(back_project(mask[30:, 50:70].copy() * 0 + 255, depth[30:, 50:70],
                                                     CameraIntrinsics(100.0, 100.0, -10.0, 0.0, 20, 30))[:, :3],
                                        axis=1))
    assert near.distance_m == pytest.approx(expected, rel=1e-5)


def test_markers_delete_then_box_and_distance_per_obstacle():
    depth = np.full((60, 80), 2.0, np.float32)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:20, 10:20] = mask[40:50, 60:70] = 255
    k = CameraIntrinsics(100.0, 100.0, 40.0, 30.0, 80, 60)
    boxes = obstacle_boxes(mask, depth, k)
    specs = obstacle_markers(boxes)
    assert specs[0].action == DELETEALL
    assert [(s.type, s.id) for s in specs[1:]] == [(CUBE, 0), (TEXT_VIEW_FACING, 0), (CUBE, 1),
                                                  (TEXT_VIEW_FACING, 1)]
    assert specs[1].position == boxes[0].centre and specs[1].scale == boxes[0].size
    assert specs[2].text == f"{boxes[0].distance_m:.2f} m" and specs[2].lifetime_s > 0
    assert obstacle_markers([])[0].action == DELETEALL


def test_cloud_and_camera_info_layouts():
    pts = np.array([[1, 2, 3, 0.5], [-1, 0, 9, 2]], np.float32)
    f = cloud_msg_fields(pts)
    assert (f["height"], f["width"], f["point_step"], f["row_step"]) == (1, 2, POINT_STEP, 32)
    assert [name for name, *_ in f["fields"]] == ["x", "y", "z", "score"]
    np.testing.assert_array_equal(cloud_points(f["data"], f["width"]), pts)
    assert cloud_msg_fields(np.zeros((0, 4), np.float32))["data"] == b""
    info = camera_info_fields(K)
    assert info["k"] == [100.0, 0.0, 4.0, 0.0, 50.0, 3.0, 0.0, 0.0, 1.0]
    k = CameraIntrinsics.from_k(info["k"], info["width"], info["height"])
    assert k == K
