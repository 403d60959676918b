"""The rendered depth and CameraInfo of `sim --bag` put obstacle points where the simulator put the
objects: ground-truth anomaly pixels, back-projected by the runtime from the bag's depth and
CameraInfo, lie on the objects' boxes (each object's AABB turned by its yaw, from the frame
metadata), within a small fraction of their distance from the camera."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")

from flowclas_ros.data.rosbag import CAMERA_INFO, Bag, deserialize  # noqa: E402
from flowclas_ros.runtime.images import image_from_fields  # noqa: E402
from flowclas_ros.runtime.obstacles3d import (  # noqa: E402
    CameraIntrinsics,
    back_project,
    depth_from_fields,
    obstacle_boxes,
)
from flowclas_ros.runtime.pipeline import stamp_ns  # noqa: E402
from flowclas_ros.sim.camera import Camera  # noqa: E402
from flowclas_ros.sim.generate import generate_split  # noqa: E402
from flowclas_ros.sim.topics import CAMERA_INFO_TOPIC, DEPTH_TOPIC, FRAME_ID, GT_TOPIC  # noqa: E402


def optical_to_world(camera: Camera, points: np.ndarray) -> np.ndarray:
    """Points (N x 3) in the camera's ROS optical frame (x right, y down, z forward) in the world."""
    forward, right, up = camera._basis()
    p = np.atleast_2d(points)
    return np.asarray(camera.eye) + p[:, :1] * right - p[:, 1:2] * up + p[:, 2:3] * forward


MARGIN_M = 0.02  # a point this close to an object's box counts as on it (mesh vs box, pixel size)


def _bag_frames(root: Path) -> list[dict]:
    """Per frame of the bag: its metadata, label, depth (m) and intrinsics, joined by stamp."""
    metas = {m["stamp_ns"]: m for m in map(json.loads, (root / "frames.jsonl").read_text().splitlines())}
    bag = Bag(root / "bag")
    assert bag.topics[DEPTH_TOPIC] == "sensor_msgs/msg/Image" and bag.topics[CAMERA_INFO_TOPIC] == CAMERA_INFO
    frames: dict[int, dict] = {}
    for message in bag.messages([DEPTH_TOPIC, CAMERA_INFO_TOPIC, GT_TOPIC]):
        msg = deserialize(message)
        assert msg.header.frame_id == FRAME_ID and message.log_time_ns == stamp_ns(msg)
        entry = frames.setdefault(stamp_ns(msg), {"meta": metas[stamp_ns(msg)]})
        if message.topic == DEPTH_TOPIC:
            assert msg.encoding == "32FC1"
            entry["depth"] = depth_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step)
        elif message.topic == CAMERA_INFO_TOPIC:
            assert msg.distortion_model == "plumb_bob" and not np.any(msg.d)
            entry["k"] = CameraIntrinsics.from_k(msg.k, msg.width, msg.height)
        else:
            entry["label"] = image_from_fields(msg.data, msg.height, msg.width, msg.encoding, msg.step)
    return [frames[t] for t in sorted(frames)]


def _outside(points: np.ndarray, obj: dict) -> np.ndarray:
    """Distance (m) of world points from the object's box (0 inside)."""
    yaw = np.radians(obj["yaw_deg"])
    c, s = np.cos(yaw), np.sin(yaw)
    rel = points - np.asarray(obj["box_centre_m"])
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)
    return np.linalg.norm(np.maximum(np.abs(local) - np.asarray(obj["box_size_m"]) / 2, 0.0), axis=1)


def point_errors(root: Path) -> list[dict]:
    """Per visible anomaly object: its points (ground-truth pixels back-projected) and how far
    they lie from its box, relative to the box centre's distance from the camera."""
    rows = []
    for f in _bag_frames(root):
        meta = f["meta"]
        camera = Camera.from_metadata(meta["camera"])
        assert f["k"] == camera.intrinsics()
        pts = back_project(f["label"] == 1, f["depth"], f["k"])
        world = optical_to_world(camera, pts[:, :3])
        objects = [o for o in meta["objects"] if o["role"] == "anomaly" and o["pixels"] > 0]
        if not objects:
            continue
        dist = np.stack([_outside(world, o) for o in objects])  # objects x points
        owner = dist.argmin(axis=0)
        for i, obj in enumerate(objects):
            mine = dist[i, owner == i]
            rng = float(np.linalg.norm(np.asarray(obj["box_centre_m"]) - np.asarray(camera.eye)))
            rows.append({"frame": meta["id"], "object": obj["name"], "pixels": obj["pixels"],
                         "points": int(mine.size), "distance_m": rng,
                         "median_rel_error": float(np.median(mine)) / rng if mine.size else float("nan"),
                         "inside_share": float(np.mean(mine <= MARGIN_M)) if mine.size else 0.0})
    return rows


def surface_errors(frames: range, per_object: int = 300) -> list[dict]:
    """Per visible anomaly object of val frames ``frames`` rendered here: its ground-truth pixels
    back-projected from the rendered depth, against where a pybullet ray through the same pixel
    meets the scene (the simulator's own geometry): the median point error relative to the
    range, and the share of rays that hit the object itself."""
    from flowclas_ros.sim.scenes import render_frame
    from flowclas_ros.sim.world import _world

    rows = []
    for index in frames:
        _, label, meta, depth = render_frame("val", index, seed=0, with_depth=True)
        camera = Camera.from_metadata(meta["camera"])
        k = camera.intrinsics()
        eye = np.asarray(camera.eye)
        for obj in (o for o in meta["objects"] if o["role"] == "anomaly" and o["pixels"] > 0):
            pts = back_project(label == 1, depth, k)
            world = optical_to_world(camera, pts[:, :3])
            mine = world[_outside(world, obj) <= MARGIN_M]
            mine = mine[np.linspace(0, len(mine) - 1, min(per_object, len(mine))).astype(int)]
            ends = eye + (mine - eye) * 2.0  # rays through each point, to twice its range
            hits = _world().client.rayTestBatch([eye.tolist()] * len(mine), ends.tolist())
            truth = np.array([h[3] for h in hits])
            rng = np.linalg.norm(truth - eye, axis=1)
            err = np.linalg.norm(mine - truth, axis=1) / rng
            rows.append({"frame": meta["id"], "object": obj["name"], "points": len(mine),
                         "distance_m": float(np.median(rng)), "median_rel_error": float(np.median(err)),
                         "on_object": float(np.mean([h[0] == obj["body"] for h in hits]))})
    return rows


def test_points_match_the_simulators_surface():
    rows = surface_errors(range(2))
    assert rows
    for r in rows:
        assert r["median_rel_error"] < 0.01 and r["on_object"] > 0.9, r


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("simdepth")
    generate_split(root, "val", 4, seed=0, bag=True, progress=False)
    return root


def _check(rows: list[dict]) -> None:
    assert rows, "no visible anomaly"
    for r in rows:
        assert r["points"] >= 0.9 * r["pixels"], r  # objects are in range: nearly all have depth
        assert r["median_rel_error"] < 0.05, r
        assert r["inside_share"] > 0.9, r


def test_obstacle_points_lie_on_the_simulated_objects(sim_bag):
    rows = point_errors(sim_bag)
    _check(rows)
    print("\n" + "\n".join(f"{r['frame']} {r['object']}: {r['points']} points at {r['distance_m']:.2f} m, "
                           f"median error {100 * r['median_rel_error']:.2f} % of the distance, "
                           f"{100 * r['inside_share']:.1f} % on the box" for r in rows))


def test_box_distance_matches_the_object(sim_bag):
    """The marker box of each ground-truth component is where the object is: its centre on the
    object's box and its distance within 5 % (+ half the object's size) of the object's."""
    for f in _bag_frames(sim_bag):
        meta = f["meta"]
        camera = Camera.from_metadata(meta["camera"])
        objects = [o for o in meta["objects"] if o["role"] == "anomaly" and o["pixels"] > 0]
        for box in obstacle_boxes(f["label"] == 1, f["depth"], f["k"]):
            centre = optical_to_world(camera, np.asarray([box.centre]))
            obj = min(objects, key=lambda o: _outside(centre, o)[0])
            rng = float(np.linalg.norm(np.asarray(obj["box_centre_m"]) - np.asarray(camera.eye)))
            assert _outside(centre, obj)[0] < 0.05 * rng, (meta["id"], box, obj)
            assert abs(box.distance_m - rng) < 0.05 * rng + obj["size_m"] / 2, (meta["id"], box, obj)


def test_sky_has_no_depth_and_depth_is_metric():
    """The renderer's non-linear depth buffer, converted: inf where nothing was drawn, and the
    z-depth of the floor under the camera's view where the geometry says."""
    from flowclas_ros.sim.world import _world

    camera = Camera.from_yaw_pitch((0.0, 0.0, 1.0), 0.0, 10.0)  # tilted up: sky in the top rows
    _world().clear()
    _, ids, depth = _world().render_with_depth(camera, [0.0, 0.0, 1.0])
    assert np.isinf(depth[ids < 0]).all() and np.isinf(depth[0]).any()
    down = Camera.from_yaw_pitch((0.0, -8.0, 1.0), -90.0, -30.0)  # facing away from the buildings
    _, ids, depth = _world().render_with_depth(down, [0.0, 0.0, 1.0])
    k = down.intrinsics()
    v = int(round(k.cy + 100))  # a floor pixel below the centre
    u = int(round(k.cx))
    assert ids[v, u] == _world().plane
    ray = optical_to_world(down, np.array([[0.0, (v - k.cy) / k.fy, 1.0]]))[0] - np.asarray(down.eye)
    floor_z = -down.eye[2] / ray[2]  # the ray has z-depth 1: it meets the floor at z-depth t
    assert depth[v, u] == pytest.approx(floor_z, rel=0.005)


@pytest.mark.slow
def test_obstacle_points_on_24_frames(tmp_path):
    """The figure docs/navigation.md states: more frames, the same check."""
    generate_split(tmp_path, "val", 24, seed=0, bag=True, progress=False)
    rows = point_errors(tmp_path)
    _check(rows)
    errs = np.array([r["median_rel_error"] for r in rows])
    surface = surface_errors(range(24))
    serr = np.array([r["median_rel_error"] for r in surface])
    assert np.all(serr < 0.05)
    print(f"\nagainst ray casts: {len(surface)} objects, median of the per-object median error "
          f"{100 * np.median(serr):.3f} %, worst {100 * serr.max():.3f} %, rays on the object "
          f"{100 * np.median([r['on_object'] for r in surface]):.1f} % (median)")
    print(f"\n{len(rows)} objects in 24 frames: median of the per-object median error "
          f"{100 * np.median(errs):.2f} %, worst {100 * errs.max():.2f} % of the distance; "
          f"on the box: median {100 * np.median([r['inside_share'] for r in rows]):.1f} %")
