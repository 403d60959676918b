"""The PyBullet obstacle benchmark, rendered for real at small n (about 15 s)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pybullet")

from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.generic import write_sample
from flowclas_ros.data.labels import read_label
from flowclas_ros.data.outliers.cutouts import load_cutout  # noqa: E402
from flowclas_ros.sim.camera import HEIGHT, WIDTH  # noqa: E402
from flowclas_ros.sim.generate import _SplitStats, build_oe_bank, generate_split  # noqa: E402
from flowclas_ros.sim.scenes import render_frame  # noqa: E402
from flowclas_ros.sim.topics import (  # noqa: E402
    CAMERA_INFO_TOPIC,
    DEPTH_TOPIC,
    FRAME_ID,
    GT_TOPIC,
    IMAGE_TOPIC,
)
from flowclas_ros.sim.world import KNOWN_OBJECTS, _world  # noqa: E402

N_VAL, N_TRAIN, N_OE = 4, 3, 4
KNOWN_NAMES = {asset.name for asset in KNOWN_OBJECTS}


def _frames(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "frames.jsonl").read_text().splitlines()]


def _random_urdf_number(name: str) -> int:
    match = re.fullmatch(r"random_urdfs/(\d{3})", name)
    assert match, f"{name!r} is not a random_urdfs object"
    return int(match.group(1))


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sim") / "val"
    return root, generate_split(root, "val", N_VAL, seed=0, bag=True, progress=False)


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("sim") / "train"
    return root, generate_split(root, "train", N_TRAIN, seed=0, progress=False)


@pytest.fixture(scope="module")
def oe_bank(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("sim") / "oe"
    return root, build_oe_bank(root, N_OE, seed=0, progress=False)


def test_frames_have_the_benchmark_size_dtypes_and_label_values(val_set):
    root, _ = val_set
    for meta in _frames(root):
        image = read_image_rgb(root / "images" / f"{meta['id']}.png")
        label = read_label(root / "labels" / f"{meta['id']}.png")  # rejects values outside {0, 1, 255}
        assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
        assert label.shape == (HEIGHT, WIDTH) and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= {0, 1, 255}
        assert image.std() > 10, "a blank render: the camera sees nothing"


def test_train_frames_hold_known_objects_only(train_set):
    root, summary = train_set
    assert summary["frames"] == N_TRAIN and summary["anomaly_frames"] == 0
    assert summary["anomaly_pixel_fraction"] == 0.0
    for meta in _frames(root):
        assert not np.any(read_label(root / "labels" / f"{meta['id']}.png") == 1)
        assert all(o["role"] == "known" and o["name"] in KNOWN_NAMES for o in meta["objects"])
        assert not meta["all_occluded"]


def test_val_frames_contain_visible_anomalies_matching_their_metadata(val_set):
    root, summary = val_set
    metas = _frames(root)
    assert summary["frames"] == len(metas) == N_VAL
    assert summary["anomaly_frames"] + summary["fully_occluded_frames"] == N_VAL
    assert summary["anomaly_frames"] >= N_VAL - 1
    assert 0.0 < summary["anomaly_pixel_fraction"] < 0.2
    written = json.loads((root / "summary.json").read_text())
    assert written["fully_occluded_frames"] == summary["fully_occluded_frames"]
    for meta in metas:
        label = read_label(root / "labels" / f"{meta['id']}.png")
        anomalies = [o for o in meta["objects"] if o["role"] == "anomaly"]
        assert 1 <= len(anomalies) <= 3
        assert sum(o["pixels"] for o in anomalies) == meta["anomaly_pixels"] == np.count_nonzero(label == 1)
        assert meta["all_occluded"] == (meta["anomaly_pixels"] == 0)
        border = np.concatenate([label[0], label[-1], label[:, 0], label[:, -1]])
        assert not np.any(border == 1), "anomalies must lie fully inside the view"


def test_test_split_frames_contain_anomalies():
    frames = [render_frame("test", i, seed=0) for i in range(2)]
    for _, label, meta in frames:
        assert meta["split"] == "test" and meta["id"].startswith("test_")
        assert any(o["role"] == "anomaly" for o in meta["objects"])
        assert set(np.unique(label).tolist()) <= {0, 1}
    assert sum(np.count_nonzero(label == 1) > 0 for _, label, _ in frames) >= 1


def test_anomalies_come_only_from_500_999_within_the_spec(val_set):
    root, _ = val_set
    for meta in _frames(root):
        for obj in meta["objects"]:
            if obj["role"] == "known":
                assert obj["name"] in KNOWN_NAMES
                assert 2.5 <= obj["distance_m"] <= 9.0
                continue
            assert 500 <= _random_urdf_number(obj["name"]) <= 999
            assert 0.2 <= obj["size_m"] <= 0.8
            assert 1.5 <= obj["distance_m"] <= 7.0


def test_anomalies_rest_on_the_floor_at_their_drawn_size():
    _, _, meta = render_frame("val", 2, seed=3)
    world = _world()  # the bodies of the last frame stay loaded until the next one
    margin = 0.005  # bullet pads AABBs with its collision margin
    for obj in (o for o in meta["objects"] if o["role"] == "anomaly"):
        lo, hi = (np.array(v) for v in world.client.getAABB(obj["body"]))
        assert abs(lo[2]) < margin, f"{obj['name']} floats or is buried: AABB min z {lo[2]}"
        number = _random_urdf_number(obj["name"])
        local_lo, local_hi = world.bounds(f"{obj['name']}/{number:03d}.urdf")
        assert (local_hi - local_lo).max() * obj["scale"] == pytest.approx(obj["size_m"], abs=1e-3)
        # yaw turns the box about z, so the world AABB is at most sqrt(2) wider than the object
        assert obj["size_m"] - 2 * margin <= (hi - lo).max() <= np.sqrt(2) * obj["size_m"] + 2 * margin


def test_oe_bank_holds_loadable_cutouts_of_000_499_only(oe_bank):
    root, paths = oe_bank
    assert len(paths) == N_OE
    records = [json.loads(line) for line in (root / "cutouts.jsonl").read_text().splitlines()]
    assert [r["file"] for r in records] == [p.name for p in paths]
    numbers = [_random_urdf_number(r["object"]) for r in records]
    assert all(0 <= n <= 499 for n in numbers)
    assert len(set(numbers)) == N_OE, "the first 500 cut-outs should be distinct objects"
    for path in paths:
        cutout = load_cutout(path)
        assert cutout.mask.any() and cutout.mask.mean() > 0.2, f"{path.name}: mask is mostly empty"
        assert min(cutout.mask.shape) >= 16, f"{path.name}: object rendered too small"


def test_same_seed_gives_identical_bytes_and_splits_differ(val_set, tmp_path):
    root, _ = val_set
    rgb, label, meta = render_frame("val", 1, seed=0)
    write_sample(tmp_path, meta["id"], rgb, label)
    for kind in ("images", "labels"):
        name = f"{kind}/{meta['id']}.png"
        assert (tmp_path / name).read_bytes() == (root / name).read_bytes()
    other_split, _, _ = render_frame("test", 1, seed=0)
    other_seed, _, _ = render_frame("val", 1, seed=1)
    assert not np.array_equal(rgb, other_split)
    assert not np.array_equal(rgb, other_seed)


def test_workers_render_the_same_frames(val_set, tmp_path):
    root, _ = val_set
    generate_split(tmp_path, "val", 2, seed=0, workers=2, progress=False)
    assert _frames(tmp_path) == _frames(root)[:2]  # body ids, poses and pixel counts too
    for meta in _frames(tmp_path):
        for kind in ("images", "labels"):
            name = f"{kind}/{meta['id']}.png"
            assert (tmp_path / name).read_bytes() == (root / name).read_bytes()


def test_bag_has_one_image_and_gt_per_frame_with_shared_stamps(val_set):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    root, _ = val_set
    typestore = get_typestore(Stores.ROS2_JAZZY)
    by_topic: dict[str, list] = {IMAGE_TOPIC: [], GT_TOPIC: []}
    with Reader(root / "bag") as reader:
        assert {c.topic for c in reader.connections} == {*by_topic, DEPTH_TOPIC, CAMERA_INFO_TOPIC}
        for connection, t_ns, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            by_topic.setdefault(connection.topic, []).append((t_ns, msg))
    metas = _frames(root)
    assert all(len(messages) == len(metas) for messages in by_topic.values())
    assert len(by_topic) == 4  # + depth and CameraInfo (test_sim_depth.py checks their contents)
    images = sorted(by_topic[IMAGE_TOPIC], key=lambda m: m[0])
    truths = sorted(by_topic[GT_TOPIC], key=lambda m: m[0])
    for meta, (t_image, image), (t_gt, gt) in zip(metas, images, truths):
        stamp = image.header.stamp.sec * 10**9 + image.header.stamp.nanosec
        assert t_image == t_gt == stamp == meta["stamp_ns"]
        assert gt.header.stamp == image.header.stamp
        assert image.header.frame_id == gt.header.frame_id == FRAME_ID
        assert (image.encoding, gt.encoding) == ("rgb8", "mono8")
        pixels = np.asarray(image.data).reshape(image.height, image.step // 3, 3)
        np.testing.assert_array_equal(pixels, read_image_rgb(root / "images" / f"{meta['id']}.png"))
        mask = np.asarray(gt.data).reshape(gt.height, gt.step)
        np.testing.assert_array_equal(mask, read_label(root / "labels" / f"{meta['id']}.png"))
    assert [t for t, _ in images] == sorted({t for t, _ in images}), "stamps must be distinct and increasing"


def test_existing_bag_is_not_overwritten(val_set):
    root, _ = val_set
    before = sorted(p.stat().st_mtime_ns for p in (root / "bag").iterdir())
    with pytest.raises(DatasetError, match="already exists"):
        generate_split(root, "val", 1, bag=True, progress=False)
    assert sorted(p.stat().st_mtime_ns for p in (root / "bag").iterdir()) == before


def test_fully_occluded_frames_are_counted():
    stats = _SplitStats()
    label = np.zeros((4, 4), np.uint8)
    stats.add(label, {"id": "val_00000", "anomaly_pixels": 0, "all_occluded": True})
    label_visible = label.copy()
    label_visible[0, :2] = 1
    stats.add(label_visible, {"id": "val_00001", "anomaly_pixels": 2, "all_occluded": False})
    summary = stats.summary()
    assert summary["fully_occluded_frames"] == 1 and summary["fully_occluded_ids"] == ["val_00000"]
    assert summary["anomaly_frames"] == 1
    assert summary["anomaly_pixel_fraction"] == pytest.approx(2 / 32)


@pytest.fixture
def sim_cli():
    """The real `flowclas-ros` entry point."""
    from flowclas_ros import cli

    return cli.main


def test_cli_builds_the_oe_bank_and_prints_a_summary(sim_cli, tmp_path, capsys):
    assert sim_cli(["sim", "--split", "oe", "-n", "2", "--out", str(tmp_path), "--seed", "5"]) == 0
    assert "2 cut-outs" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["00000.png", "00001.png"]
    assert sim_cli(["sim", "--split", "oe", "-n", "1", "--out", str(tmp_path), "--bag"]) == 2
    assert "--bag applies to frame splits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sim_cli(["sim", "--split", "val", "-n", "0", "--out", str(tmp_path)])


def test_cli_frame_split_reports_fully_occluded_count(sim_cli, tmp_path, capsys):
    assert sim_cli(["sim", "--split", "val", "-n", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fully-occluded frames" in out and "anomaly pixel fraction" in out
    assert (tmp_path / "images" / "val_00000.png").is_file()
