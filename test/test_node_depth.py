"""The node's 3D outputs over real DDS: colour + aligned depth + CameraInfo published from this
process, ~/obstacle_points and ~/obstacles from the real node in another, checked against the
runtime's back-projection of the mask and heatmap the node published for the same frame."""
from __future__ import annotations

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ros_harness import NodeProcess, Peer, image_msg, wait_for  # noqa: I100
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.runtime.node_interface import output_topics, output_topics_3d
from flowclas_ros.runtime.obstacles3d import (
    POINT_STEP,
    CameraIntrinsics,
    back_project,
    camera_info_fields,
    cloud_points,
)
from flowclas_ros.runtime.pipeline import stamp_ns

NS = "/fc_depth"
BASE = f"{NS}/flowclas_detector"
OUT = {**output_topics(NS), **output_topics_3d(NS)}
MAX_POINTS = 300
CAM = f"{NS}/camera"


@pytest.fixture(scope="module")
def frames(toy_world):
    return [read_image_rgb(s.image_path) for s in generic_layout(toy_world / "test")]


@pytest.fixture(scope="module")
def staged_model(trained, tmp_path_factory):
    """The test model carrying the depth region stage (runtime/depth_regions.py)."""
    from flowclas_ros.deploy.onnx_metadata import set_depth_regions
    from flowclas_ros.runtime.depth_regions import DepthRegions

    model = tmp_path_factory.mktemp("staged") / "staged.onnx"
    set_depth_regions(trained["onnx"], model, DepthRegions(stride=1, min_px=20))
    return model


@pytest.fixture(scope="module")
def rig(staged_model, frames):
    """(node process, peer, {'image', 'depth', 'info'} publishers) of a node with use_depth, on a
    model that carries the depth region stage."""
    peer = Peer("flowclas_depth_peer")
    for key in ("heatmap", "mask"):
        peer.subscribe(Image, OUT[key])
    peer.subscribe(PointCloud2, OUT["points"])
    peer.subscribe(MarkerArray, OUT["markers"])
    peer.subscribe(DiagnosticArray, "/diagnostics")
    proc = NodeProcess({"model_path": staged_model, "threshold": 0.0, "min_obstacle_area": 0,
                        "use_depth": True, "max_obstacle_points": MAX_POINTS, "depth_wait": 0.5,
                        "depth_regions_wait": 0.3,
                        "diagnostics_period": 0.2}, NS,
                       remap={"image": f"{CAM}/image_raw", "depth/image": f"{CAM}/depth/image_raw",
                              "camera_info": f"{CAM}/camera_info"})
    pubs = {"image": peer.node.create_publisher(Image, f"{CAM}/image_raw", 10),
            "depth": peer.node.create_publisher(Image, f"{CAM}/depth/image_raw", 10),
            "info": peer.node.create_publisher(CameraInfo, f"{CAM}/camera_info", 10)}
    try:
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()) and
                 all(peer.node.count_publishers(t) > 0 for t in OUT.values()), 60,
                 "the node to come up:\n" + proc.log)
        yield proc, peer, pubs
    finally:
        proc.kill()
        peer.close()


def intrinsics(shape) -> CameraIntrinsics:
    h, w = shape[:2]
    return CameraIntrinsics(fx=60.0, fy=55.0, cx=(w - 1) / 2, cy=(h - 1) / 2, width=w, height=h)


def info_msg(k: CameraIntrinsics, stamp: int) -> CameraInfo:
    msg = CameraInfo(**camera_info_fields(k))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    msg.header.frame_id = "cam_optical"
    return msg


def depth_image(shape) -> np.ndarray:
    """Metres: a ramp from 1 to 5 m down the image, with holes (no reading) in one corner."""
    h, w = shape[:2]
    depth = np.repeat(np.linspace(1.0, 5.0, h, dtype=np.float32)[:, None], w, axis=1)
    depth[: h // 4, : w // 4] = np.nan
    return depth


_stamp = [1_750_000_000_000_000_000]


def send(peer, pubs, rgb, depth=None, encoding="32FC1", want=("points", "markers", "mask", "heatmap"),
         timeout=20.0):
    """Publish CameraInfo, the depth (if any) and the colour frame with one new stamp; return the
    outputs in `want` that carry it."""
    _stamp[0] += 50_000_000
    st = _stamp[0]
    k = intrinsics(rgb.shape)
    pubs["info"].publish(info_msg(k, st))
    if depth is not None:
        pubs["depth"].publish(image_msg(depth, encoding, st, "cam_optical"))
    pubs["image"].publish(image_msg(rgb, "rgb8", st, "cam_optical"))

    def answered():
        got = {key: [m for m in peer.messages(OUT[key]) if _stamp_of(m) == st] for key in want}
        return got if all(got.values()) else None
    got = wait_for(answered, timeout, f"outputs {want} of stamp {st}")
    return {key: v[0] for key, v in got.items()}, k


def _stamp_of(msg) -> int:
    if isinstance(msg, MarkerArray):
        return stamp_ns(msg.markers[0]) if msg.markers else -1
    return stamp_ns(msg)


def as_array(msg: Image) -> np.ndarray:
    dtype = np.float32 if msg.encoding == "32FC1" else np.uint8
    return np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width)


def _diag(peer) -> dict[str, str]:
    mine = [s for m in peer.messages("/diagnostics") for s in m.status if s.name.startswith(f"{BASE}:")]
    return {kv.key: kv.value for kv in mine[-1].values} if mine else {}


def test_points_are_the_masks_pixels_back_projected_with_the_input_header(rig, frames):
    _, peer, pubs = rig
    rgb = frames[0]
    depth = depth_image(rgb.shape)
    out, k = send(peer, pubs, rgb, depth)
    cloud = out["points"]
    assert cloud.header.frame_id == "cam_optical"
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "score"]
    assert all(f.datatype == PointField.FLOAT32 for f in cloud.fields)
    assert cloud.point_step == POINT_STEP and cloud.height == 1 and not cloud.is_bigendian
    assert 0 < cloud.width <= MAX_POINTS
    mask, heat = as_array(out["mask"]), as_array(out["heatmap"])
    assert np.count_nonzero(mask) > MAX_POINTS  # decimation was needed
    expected = back_project(mask, depth, k, heat, MAX_POINTS)
    np.testing.assert_allclose(cloud_points(cloud.data, cloud.width), expected, rtol=1e-6)
    assert np.all(cloud_points(cloud.data, cloud.width)[:, 2] >= 1.0)  # holes skipped, no NaN

    markers = out["markers"].markers
    assert markers[0].action == Marker.DELETEALL
    cubes = [m for m in markers if m.type == Marker.CUBE and m.action == Marker.ADD]
    texts = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert cubes and len(cubes) == len(texts)
    assert all(m.header.frame_id == "cam_optical" for m in markers)
    assert all(1.0 <= c.pose.position.z <= 5.0 and c.scale.x > 0 for c in cubes)
    assert all(t.text.endswith(" m") and 1.0 <= float(t.text.split()[0]) <= 5.5 for t in texts)



def test_millimetre_depth_gives_the_same_points(rig, frames):
    _, peer, pubs = rig
    rgb = frames[1]
    depth = depth_image(rgb.shape)
    metres, _ = send(peer, pubs, rgb, depth)
    mm = np.nan_to_num(np.round(depth * 1000), nan=0).astype(np.uint16)
    millimetres, _ = send(peer, pubs, rgb, mm, encoding="16UC1")
    a = cloud_points(metres["points"].data, metres["points"].width)
    b = cloud_points(millimetres["points"].data, millimetres["points"].width)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_frame_without_depth_is_counted_and_a_mismatched_one_refused(rig, frames):
    proc, peer, pubs = rig
    rgb = frames[2]
    # no depth for this stamp: the 2D outputs still come, the 3D ones do not, and it is counted
    out, _ = send(peer, pubs, rgb, None, want=("mask",))
    time.sleep(0.8)  # past depth_wait
    st = stamp_ns(out["mask"])
    assert not [m for m in peer.messages(OUT["points"]) if stamp_ns(m) == st]
    # a depth image of another size: refused and counted, never a crash
    send(peer, pubs, rgb, np.ones((8, 8), np.float32), want=("mask",))
    values = wait_for(lambda: (v := _diag(peer)) and int(v.get("depth_unmatched", 0)) >= 1 and
                      int(v.get("bad_input.depth_size_mismatch", 0)) >= 1 and v, 10,
                      "depth counters in diagnostics")
    assert int(values["depth_matched"]) >= 1
    assert "no depth frame with stamp" in proc.log
    assert proc.proc.poll() is None
    send(peer, pubs, rgb, depth_image(rgb.shape))  # and the next good frame is served


def test_depth_arriving_after_its_frame_was_processed_still_gets_its_cloud(rig, frames):
    """Inference never waits for depth: the heatmap goes out first, and a depth frame that comes
    0.3 s later (a stock RGB-D driver over DDS often sends it that late) is still paired."""
    proc, peer, pubs = rig
    rgb = frames[3]
    out, k = send(peer, pubs, rgb, None, want=("mask", "heatmap"))
    st = stamp_ns(out["mask"])
    time.sleep(0.3)
    pubs["depth"].publish(image_msg(depth_image(rgb.shape), "32FC1", st, "cam_optical"))
    (cloud, *_) = wait_for(lambda: [m for m in peer.messages(OUT["points"]) if stamp_ns(m) == st], 10,
                           "the late frame's cloud")
    expected = back_project(as_array(out["mask"]), depth_image(rgb.shape), k, as_array(out["heatmap"]), MAX_POINTS)
    np.testing.assert_allclose(cloud_points(cloud.data, cloud.width), expected, rtol=1e-6)
    assert cloud.header.frame_id == "cam_optical"


def test_the_depth_region_stage_runs_on_frames_whose_depth_came_first(rig, frames, staged_model):
    """The node runs the model's depth region stage on a frame whose depth and CameraInfo came
    before it, or within `depth_regions_wait` after it, with the same result as the runtime
    Detector given that depth; a frame without depth, or with depth of another size, goes on
    without the stage; each outcome is counted in the diagnostics, and the node lives on."""
    from flowclas_ros.runtime.detector import Detector

    proc, peer, pubs = rig
    rgb = frames[4]
    depth = depth_image(rgb.shape)
    pubs["info"].publish(info_msg(intrinsics(rgb.shape), _stamp[0]))
    pubs["depth"].publish(image_msg(depth, "32FC1", _stamp[0] + 50_000_000, "cam_optical"))  # send()'s next stamp
    time.sleep(0.5)  # the depth (and CameraInfo) are cached before the colour frame is sent
    out, k = send(peer, pubs, rgb, None, want=("heatmap",))
    det = Detector(staged_model, threshold=0.0).detect(rgb, "rgb8", depth, k)
    assert det.depth_stage != "no_depth"
    np.testing.assert_allclose(as_array(out["heatmap"]), det.heatmap, rtol=0, atol=1e-6)
    # depth 0.1 s after its colour frame, within depth_regions_wait (0.3 s): the frame waits for it
    _stamp[0] += 50_000_000
    st = _stamp[0]
    pubs["info"].publish(info_msg(k, st))
    pubs["image"].publish(image_msg(rgb, "rgb8", st, "cam_optical"))
    time.sleep(0.1)
    pubs["depth"].publish(image_msg(depth, "32FC1", st, "cam_optical"))
    (late, *_) = wait_for(lambda: [m for m in peer.messages(OUT["heatmap"]) if _stamp_of(m) == st], 10,
                          "the heatmap of a frame whose depth came 0.1 s after it")
    np.testing.assert_allclose(as_array(late), det.heatmap, rtol=0, atol=1e-6)
    send(peer, pubs, rgb, None, want=("heatmap",))  # no depth for this one
    send(peer, pubs, rgb, np.ones((8, 8), np.float32), want=("heatmap",))  # depth of another size
    values = wait_for(lambda: (v := _diag(peer)) and int(v.get("depth_regions_no_depth", 0)) >= 1
                      and int(v.get("depth_regions_bad_depth", 0)) >= 1 and v, 10,
                      "depth region counters in diagnostics")
    ran = sum(int(values.get(f"depth_regions_{k}", 0)) for k in ("lifted", "no_segment", "no_ground"))
    assert ran >= 1, values
    assert proc.proc.poll() is None
    send(peer, pubs, rgb, depth_image(rgb.shape))  # and the next good frame is served


def test_without_use_depth_there_are_no_depth_topics(trained, frames):
    """Without use_depth the node has no depth subscriptions and no 3D publishers."""
    peer = Peer("flowclas_depth_peer_off")
    proc = NodeProcess({"model_path": trained["onnx"]}, "/fc_nodepth")
    try:
        wait_for(lambda: peer.node.count_publishers("/fc_nodepth/flowclas_detector/overlay") > 0, 60,
                 "node start:\n" + proc.log)
        assert peer.node.count_publishers("/fc_nodepth/flowclas_detector/obstacle_points") == 0
        assert peer.node.count_subscribers("/fc_nodepth/depth/image") == 0
    finally:
        assert proc.interrupt() == 0, proc.log
        peer.close()
