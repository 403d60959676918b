"""Measured depth in datasets: the stereo noise model (data/depth_noise.py), the layout's depth
files and camera_info.yaml (data/depth_files.py), and `sim --depth` writing both."""
from __future__ import annotations

import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.data.depth_files import (
    CAMERA_INFO_FILE,
    read_camera_info,
    read_depth_m,
    write_camera_info,
    write_depth,
)
from flowclas_ros.data.depth_noise import StereoDepthNoise, frame_depth_rng, to_millimetres
from flowclas_ros.data.files import DatasetError, write_png
from flowclas_ros.data.generic import generic_layout, write_sample
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics

F = 415.0
K = CameraIntrinsics(F, F, 320.0, 240.0, 640, 480)


def _ramp() -> np.ndarray:
    """z-depth from 1 m (bottom) to 9 m (top), the top rows sky (inf)."""
    z = np.repeat(np.linspace(9.0, 1.0, 480, dtype=np.float32)[:, None], 640, axis=1)
    z[:20] = np.inf
    return z


def test_the_noise_depends_only_on_the_seed_and_the_frame_id() -> None:
    z = _ramp()
    noise = StereoDepthNoise()
    a = noise.apply(z, F, frame_depth_rng(0, "val_00001"))
    b = noise.apply(z, F, frame_depth_rng(0, "val_00001"))
    c = noise.apply(z, F, frame_depth_rng(0, "val_00002"))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(c))


def test_the_error_grows_with_range_and_holes_are_holes() -> None:
    z = _ramp()
    m = StereoDepthNoise().apply(z, F, frame_depth_rng(0, "f"))
    assert np.isnan(m[:20]).all()  # the sky has no reading
    rel = np.abs(m - z) / z
    near, far = rel[400:][np.isfinite(rel[400:])], rel[40:120][np.isfinite(rel[40:120])]
    assert np.median(near) < 0.01 < np.median(far) < 0.1  # about z^2 / (f b) * sigma
    holes = np.isnan(m[20:]).mean()
    assert 0.01 < holes < 0.1  # blobs where matching failed
    beyond = StereoDepthNoise(max_range=5.0).apply(z, F, frame_depth_rng(0, "f"))
    assert np.isnan(beyond[z > 6.5]).all()  # beyond the range, whatever the noise


def test_depth_files_round_trip_and_refuse_what_is_not_aligned_depth(tmp_path) -> None:
    z = _ramp()
    mm = to_millimetres(z)
    assert mm.dtype == np.uint16 and (mm[:20] == 0).all() and mm[-1, 0] == 1000
    write_depth(tmp_path, "f", mm)
    back = read_depth_m(tmp_path / "depth" / "f.png", (480, 640))
    np.testing.assert_allclose(back[20:], np.round(z[20:] * 1000) / 1000, atol=1e-6)
    assert np.isnan(back[:20]).all()
    with pytest.raises(DatasetError, match="aligned"):
        read_depth_m(tmp_path / "depth" / "f.png", (240, 320))
    write_png(tmp_path / "depth" / "g.png", np.zeros((480, 640), np.uint8))
    with pytest.raises(DatasetError, match="16-bit"):
        read_depth_m(tmp_path / "depth" / "g.png", (480, 640))


def test_camera_info_yaml_round_trips_and_bad_files_name_the_problem(tmp_path) -> None:
    assert read_camera_info(tmp_path) is None  # no file: no depth stage
    write_camera_info(tmp_path, K)
    assert read_camera_info(tmp_path) == K
    path = tmp_path / CAMERA_INFO_FILE
    path.write_text("image_width: 640\nimage_height: 480\n")
    with pytest.raises(DatasetError, match="camera_matrix"):
        read_camera_info(tmp_path)
    path.write_text("image_width: 640\nimage_height: 480\ncamera_matrix: {rows: 3, cols: 3, data: "
                    "[0, 0, 320, 0, 0, 240, 0, 0, 1]}\n")
    with pytest.raises(DatasetError, match="uncalibrated"):
        read_camera_info(tmp_path)
    path.write_text("image_width: wide\nimage_height: 480\ncamera_matrix: {data: [1, 0, 0, 0, 1, 0, 0, 0, 1]}\n")
    with pytest.raises(DatasetError, match="integers"):
        read_camera_info(tmp_path)


def test_the_generic_layout_carries_a_frames_depth(tmp_path) -> None:
    rgb = np.zeros((480, 640, 3), np.uint8)
    write_sample(tmp_path, "a", rgb, None)
    write_sample(tmp_path, "b", rgb, None)
    write_depth(tmp_path, "a", to_millimetres(_ramp()))
    a, b = generic_layout(tmp_path)
    assert a.depth_path == tmp_path / "depth" / "a.png" and b.depth_path is None


def test_sim_depth_writes_measured_depth_and_the_intrinsics(tmp_path, capsys) -> None:
    out = tmp_path / "val"
    assert cli.main(["sim", "--split", "val", "-n", "2", "--out", str(out), "--depth"]) == 0
    k = read_camera_info(out)
    assert k is not None and k.width == 640 and k.height == 480 and k.fx > 0
    samples = generic_layout(out)
    assert all(s.depth_path is not None for s in samples)
    d = read_depth_m(samples[0].depth_path, (480, 640))
    assert 0.5 < np.isfinite(d).mean() < 1.0  # readings, and holes
    capsys.readouterr()
    assert cli.main(["sim", "--split", "oe", "-n", "2", "--out", str(tmp_path / "oe"), "--depth"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_replay_depth_pairs_by_stamp_and_says_why_not() -> None:
    """eval/replay_depth.py on rosbags messages as a bag holds them: a frame gets its depth once
    depth and a CameraInfo of its stamp are there; a missing or mis-sized depth is said, not fixed;
    the cache of depth that came before its image is bounded."""
    from flowclas_ros.data.rosbag import camera_info_message, header_message, image_message
    from flowclas_ros.eval.replay_depth import MAX_CACHED_DEPTH, ReplayDepth

    k = CameraIntrinsics(F, F, 320.0, 240.0, 640, 480)
    mm = to_millimetres(_ramp())
    rd = ReplayDepth(depth_scale=0.001)
    stamp = 1_700_000_000_000_000_000
    rd.add_depth(image_message(mm, "16UC1", header_message(stamp, "cam")))
    assert not rd.ready(stamp)  # no CameraInfo yet
    rd.add_info(camera_info_message(k, header_message(stamp, "cam")))
    assert rd.ready(stamp) and not rd.ready(stamp + 1)
    depth_m, got_k, why = rd.take(stamp, (480, 640, 3))
    assert why is None and got_k == k and np.nanmax(np.abs(depth_m - mm / 1000.0)) < 1e-6
    assert rd.take(stamp, (480, 640, 3))[2] == "no_depth"  # used once
    rd.add_depth(image_message(mm[:240, :320].copy(), "16UC1", header_message(stamp + 5, "cam")))
    assert rd.take(stamp + 5, (480, 640, 3))[2] == "bad_depth"  # not aligned to the colour frame
    for i in range(MAX_CACHED_DEPTH + 3):
        rd.add_depth(image_message(mm, "16UC1", header_message(stamp + 100 + i, "cam")))
    assert not rd.ready(stamp + 100) and rd.ready(stamp + 100 + MAX_CACHED_DEPTH + 2)
