"""`flowclas-ros replay` on a real PyBullet sim bag with the really trained tiny model: the output
bag read back by rosbags, metrics equal to the evaluator's on the same frames, damaged input,
Ctrl-C, the CLI, and the real node over DDS giving the same heatmaps on the same frames."""
from __future__ import annotations

import csv
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from nested_compare import assert_same
from rosbags.rosbag2 import Reader
from test_bags import compressed_msg, image_msg, write_bag

from flowclas_ros import cli
from flowclas_ros.data.files import read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.rosbag import COMPRESSED_IMAGE, IMAGE, BagError, typestore
from flowclas_ros.eval.evaluate import evaluate
from flowclas_ros.eval.replay import replay
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.node_interface import NODE_NAME, output_topics, output_topics_3d
from flowclas_ros.runtime.obstacles3d import (
    CUBE,
    DELETEALL,
    CameraIntrinsics,
    back_project,
    cloud_points,
    depth_from_fields,
)
from flowclas_ros.runtime.pipeline import stamp_ns
from flowclas_ros.runtime.processing import threshold_components
from flowclas_ros.sim.topics import CAMERA_INFO_TOPIC, DEPTH_TOPIC, FRAME_ID, GT_TOPIC, IMAGE_TOPIC

OUT = output_topics()
OUT3D = output_topics_3d()
ENCODINGS = {"heatmap": "32FC1", "mask": "mono8", "overlay": "bgr8"}


def read_bag(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag time, message)], read back with rosbags."""
    ts, got = typestore(), defaultdict(list)
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            got[conn.topic].append((t, ts.deserialize_cdr(raw, conn.msgtype)))
    return dict(got)


def to_array(msg) -> np.ndarray:
    dtype = np.float32 if msg.encoding == "32FC1" else np.uint8
    ch = 3 if msg.encoding in ("bgr8", "rgb8") else 1
    arr = np.frombuffer(bytes(msg.data), dtype).reshape(msg.height, msg.width, ch)
    return arr[..., 0] if ch == 1 else arr


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    """`flowclas-ros sim --bag`: 6 rendered 640x480 frames as the generic layout + out/bag/
    (image + ground truth, same stamps)."""
    root = tmp_path_factory.mktemp("sim")
    assert cli.main(["sim", "--split", "val", "-n", "6", "--out", str(root), "--bag"]) == 0
    return root


@pytest.fixture(scope="module")
def replayed(trained, sim, tmp_path_factory):
    base = tmp_path_factory.mktemp("replay")
    result = replay(sim / "bag", base / "out", trained["onnx"], gt_topic=GT_TOPIC,
                    report=base / "report", progress=False)
    return result, base / "out", base / "report"


def test_output_bag_has_the_input_and_three_outputs_per_frame_at_the_input_stamps(
        replayed, sim, trained):
    r, out, _ = replayed
    assert NODE_NAME == "flowclas_detector"
    assert OUT == {"heatmap": "/flowclas_detector/anomaly_heatmap",
                   "mask": "/flowclas_detector/obstacle_mask",
                   "overlay": "/flowclas_detector/overlay"}
    assert output_topics("/robot1/")["mask"] == "/robot1/flowclas_detector/obstacle_mask"
    src, got = read_bag(sim / "bag"), read_bag(out)
    assert set(got) == {IMAGE_TOPIC, GT_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC, *OUT.values(),
                        *OUT3D.values()}
    times = [t for t, _ in src[IMAGE_TOPIC]]
    stamps = [stamp_ns(m) for _, m in src[IMAGE_TOPIC]]
    assert len(stamps) == 6 == r["frames"] and r["skipped"] == {} and r["unmatched_frames"] == 0
    for topic in (IMAGE_TOPIC, GT_TOPIC, DEPTH_TOPIC):  # copied verbatim
        assert [t for t, _ in got[topic]] == [t for t, _ in src[topic]]
        for (_, a), (_, b) in zip(got[topic], src[topic]):
            assert (a.encoding, stamp_ns(a)) == (b.encoding, stamp_ns(b))
            np.testing.assert_array_equal(a.data, b.data)
    for key, topic in OUT.items():
        msgs = got[topic]
        assert [t for t, _ in msgs] == times  # written at the input's bag time
        assert [stamp_ns(m) for _, m in msgs] == stamps  # with the input's header
        for _, m in msgs:
            assert (m.encoding, m.header.frame_id, m.height, m.width) == (ENCODINGS[key], FRAME_ID,
                                                                          480, 640)
    det = Detector(trained["onnx"])
    rgb0 = read_image_rgb(generic_layout(sim)[0].image_path)
    heat0 = to_array(got[OUT["heatmap"]][0][1])
    np.testing.assert_array_equal(heat0, det.heatmap(rgb0))  # the bag's frame, the runtime path
    np.testing.assert_array_equal(to_array(got[OUT["mask"]][0][1]),
                                  threshold_components(heat0, det.threshold, 50)[0])
    with Reader(out) as reader:  # metadata and summary written: a complete MCAP bag
        assert reader.message_count == 9 * 6
    assert [p.suffix for p in out.iterdir() if p.name != "metadata.yaml"] == [".mcap"]


def test_obstacle_points_and_boxes_from_the_bags_depth(replayed, sim):
    """The 3D outputs of every frame: the output mask's pixels back-projected with the bag's own
    depth and CameraInfo, decimated as the node does; boxes after a DELETEALL; same headers."""
    r, out, _ = replayed
    assert r["obstacles3d"]["depth_topic"] == DEPTH_TOPIC
    assert r["obstacles3d"]["camera_info_topic"] == CAMERA_INFO_TOPIC
    assert (r["obstacles3d"]["frames_with_3d"], r["obstacles3d"]["problems"]) == (6, {})
    src, got = read_bag(sim / "bag"), read_bag(out)
    info = src[CAMERA_INFO_TOPIC][0][1]
    k = CameraIntrinsics.from_k(info.k, info.width, info.height)
    depth = {stamp_ns(m): depth_from_fields(m.data, m.height, m.width, m.encoding, m.step)
             for _, m in src[DEPTH_TOPIC]}
    times = [t for t, _ in src[IMAGE_TOPIC]]
    assert [t for t, _ in got[OUT3D["points"]]] == times == [t for t, _ in got[OUT3D["markers"]]]
    n_points = 0
    for (_, mask_msg), (_, heat_msg), (_, cloud), (_, markers) in zip(
            got[OUT["mask"]], got[OUT["heatmap"]], got[OUT3D["points"]], got[OUT3D["markers"]]):
        st = stamp_ns(mask_msg)
        assert stamp_ns(cloud) == st and cloud.header.frame_id == FRAME_ID
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "score"] and cloud.point_step == 16
        expected = back_project(to_array(mask_msg), depth[st], k, to_array(heat_msg), 5000)
        np.testing.assert_array_equal(cloud_points(cloud.data, cloud.width), expected)
        n_points += cloud.width
        assert markers.markers[0].action == DELETEALL
        cubes = [m for m in markers.markers if m.type == CUBE and m.action != DELETEALL]
        assert all(m.header.frame_id == FRAME_ID and stamp_ns(m) == st for m in markers.markers)
        assert all(m.pose.position.z > 0 for m in cubes)
    assert n_points > 0


def test_metrics_equal_the_evaluator_on_the_same_frames(replayed, sim, trained, tmp_path):
    r, _, _ = replayed
    e = evaluate(sim, trained["onnx"], out_dir=tmp_path / "eval", progress=False)  # the same
    own = {"frames", "ms_per_frame", "ms_per_frame_p95", "data", "layout", "report", "warnings"}
    for key in set(e) - own:
        assert_same(r[key], e[key], key, abs_tol=1e-6)
    assert r["scored_frames"] == e["frames"] == 6 and e["anomaly_frames"] > 0
    assert 0 < r["auroc"] <= 100 and r["components"]["gt_components"] > 0
    with open(tmp_path / "eval" / "per_frame.csv") as f:
        rows = list(csv.DictReader(f))
    for row, mine in zip(rows, r["per_frame"]):  # per-frame scores too (csv: 6 digits)
        assert float(row["f1"]) == pytest.approx(mine["f1"], rel=1e-5, abs=1e-9)
        assert int(row["anomaly_pixels"]) == mine["anomaly_pixels"]
    assert [w["f1"] for w in r["worst_frames"]] == sorted(w["f1"] for w in r["worst_frames"])


def test_report_directory(replayed):
    r, _, rep = replayed
    for name in ("pr_curve.png", "roc_curve.png", "montage_worst.png", "montage_best.png",
                 "per_frame.csv", "frames.csv", "scores_over_time.png", "metrics.json"):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    for name in ("montage_worst.png", "scores_over_time.png"):
        img = cv2.imread(str(rep / name))
        assert img is not None and min(img.shape[:2]) >= 200 and img.std() > 5, name
    saved = json.loads((rep / "metrics.json").read_text())
    assert "per_frame" not in saved and saved["report"] == str(rep)
    assert (saved["frames"], saved["skipped"], saved["scored_frames"]) == (6, {}, 6)
    assert saved["auprc"] == pytest.approx(r["auprc"]) and saved["ms_per_frame"] > 0
    with open(rep / "frames.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(x["stamp_ns"]) for x in rows] == [p["stamp_ns"] for p in r["per_frame"]]
    assert all(x["f1"] != "" for x in rows)
    assert float(rows[1]["t_s"]) == pytest.approx(0.1)


def test_cli_json_and_force(replayed, sim, trained, tmp_path, capfd):
    out = tmp_path / "o"
    args = ["replay", str(sim / "bag"), "--out", str(out), "--model", str(trained["onnx"]),
            "--gt-topic", GT_TOPIC, "--json", "--quiet"]
    assert cli.main(args) == 0
    stdout = capfd.readouterr().out
    obj = json.loads(stdout)  # exactly one JSON object on stdout
    assert stdout.strip().count("\n") == 0
    assert {"frames", "skipped", "ms_per_frame", "auprc", "fpr95", "mean_f1", "per_frame",
            "worst_frames"} <= set(obj)
    assert obj["frames"] == 6 and obj["auprc"] == pytest.approx(replayed[0]["auprc"])

    before = (out / "metadata.yaml").stat().st_mtime_ns
    assert cli.main(args) == 2  # exists: refused, untouched
    assert "exists; pass --force" in capfd.readouterr().err
    assert (out / "metadata.yaml").stat().st_mtime_ns == before
    plain = ["replay", str(sim / "bag"), "--out", str(out), "--model", str(trained["onnx"]),
             "--image-topic", IMAGE_TOPIC, "--quiet"]
    rep = tmp_path / "rep"
    assert cli.main(plain + ["--force", "--report", str(rep)]) == 0
    text = capfd.readouterr().out
    assert "replayed 6 frames of /camera/image_raw" in text and "frames/s" in text
    assert f"3D outputs from {DEPTH_TOPIC} + {CAMERA_INFO_TOPIC}: 6 frames" in text
    assert set(read_bag(out)) == {IMAGE_TOPIC, DEPTH_TOPIC, CAMERA_INFO_TOPIC, *OUT.values(),
                                  *OUT3D.values()}
    # without ground truth: scores over time and per-frame CSV, no metrics or montages
    assert sorted(p.name for p in rep.iterdir()) == ["frames.csv", "metrics.json",
                                                     "scores_over_time.png"]
    saved = json.loads((rep / "metrics.json").read_text())
    assert saved["frames"] == 6 and "auprc" not in saved

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert cli.main(plain[:3] + [str(precious)] + plain[4:] + ["--force"]) == 2
    assert "only replaces a bag directory" in capfd.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert cli.main(plain[:3] + [str(sim)] + plain[4:] + ["--force"]) == 2  # holds the input
    assert "must not be the input bag" in capfd.readouterr().err and (sim / "bag").is_dir()


def test_missing_topics_name_the_topics_that_exist(sim, trained, tmp_path):
    out = tmp_path / "o"
    listing = (r"/camera/anomaly_gt \(sensor_msgs/msg/Image\), "
               r"/camera/camera_info \(sensor_msgs/msg/CameraInfo\), "
               r"/camera/depth/image_raw \(sensor_msgs/msg/Image\), "
               r"/camera/image_raw \(sensor_msgs/msg/Image\)")
    with pytest.raises(BagError, match=r"image topic /front/image is not in bag .*" + listing):
        replay(sim / "bag", out, trained["onnx"], image_topic="/front/image", progress=False)
    with pytest.raises(BagError, match=r"ground-truth topic /gt is not in bag .*" + listing):
        replay(sim / "bag", out, trained["onnx"], gt_topic="/gt", progress=False)
    with pytest.raises(BagError, match=r"depth topic /front/depth is not in bag"):
        replay(sim / "bag", out, trained["onnx"], gt_topic=GT_TOPIC, depth_topic="/front/depth",
               progress=False)
    with pytest.raises(BagError, match="does not exist"):
        replay(tmp_path / "nobag", out, trained["onnx"], progress=False)
    assert not out.exists()


def test_truncated_bag_processes_what_it_can_and_reports_the_rest(sim, trained, tmp_path):
    bag = tmp_path / "cut"
    bag.mkdir()
    for f in (sim / "bag").iterdir():
        (bag / f.name).write_bytes(f.read_bytes())
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    r = replay(bag, tmp_path / "out", trained["onnx"], gt_topic=GT_TOPIC, progress=False)
    assert 2 <= r["frames"] <= 4 and r["skipped"] == {"truncated": 6 - r["frames"]}
    assert r["scored_frames"] == r["frames"] and r["gt_skipped"] == {"truncated": 6 - r["frames"]}
    assert any("truncated at byte" in n for n in r["notes"])
    assert any("frames skipped: truncated" in w for w in r["warnings"])
    got = read_bag(tmp_path / "out")
    assert all(len(got[t]) == r["frames"] for t in (IMAGE_TOPIC, *OUT.values()))


@pytest.fixture(scope="module")
def sim_frames(sim) -> list[np.ndarray]:
    return [read_image_rgb(s.image_path) for s in generic_layout(sim)]


def test_bad_messages_are_skipped_and_counted_by_reason(sim_frames, trained, tmp_path):
    f = sim_frames
    t = [1_700_000_000_000_000_000 + i * 100_000_000 for i in range(4)]
    good = typestore().serialize_cdr(image_msg(t[2], f[2]), IMAGE)
    bag = write_bag(tmp_path / "bad", [
        (IMAGE_TOPIC, IMAGE, t[0], image_msg(t[0], f[0])),
        (IMAGE_TOPIC, IMAGE, t[1], image_msg(t[1], f[1], step=640 * 3 - 2)),  # wrong step
        (IMAGE_TOPIC, IMAGE, t[2], bytes(good[:100])),  # CDR that does not deserialize
        (IMAGE_TOPIC, IMAGE, t[3], image_msg(t[3], f[3])),
    ])
    r = replay(next(bag.glob("*.mcap")), tmp_path / "out", trained["onnx"], progress=False)
    assert r["frames"] == 2 and r["skipped"] == {"bad_step": 1, "deserialize_error": 1}
    assert r["skipped_frames"] == 2 and "gt_topic" in r and r["gt_topic"] is None
    got = read_bag(tmp_path / "out")
    assert [stamp_ns(m) for _, m in got[IMAGE_TOPIC]] == [t[0], t[1], t[3]]  # valid CDR copied
    for topic in OUT.values():
        assert [stamp_ns(m) for _, m in got[topic]] == [t[0], t[3]]


def test_ctrl_c_leaves_a_valid_partial_bag(sim, trained, tmp_path, monkeypatch):
    import flowclas_ros.runtime.pipeline as pipeline

    real, calls = pipeline.run_frame, []

    def interrupted_on_the_third_frame(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_frame", interrupted_on_the_third_frame)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(KeyboardInterrupt):
        replay(sim / "bag", tmp_path / "out", trained["onnx"], gt_topic=GT_TOPIC,
               report=tmp_path / "report", progress=False)
    got = read_bag(tmp_path / "out")  # footer, summary and metadata.yaml were written
    stamps = [stamp_ns(m) for _, m in read_bag(sim / "bag")[IMAGE_TOPIC]]
    for topic in OUT.values():
        assert [stamp_ns(m) for _, m in got[topic]] == stamps[:2]
    assert len(got[IMAGE_TOPIC]) == 3
    assert not (tmp_path / "report").exists() and not list(scratch.iterdir())  # caches removed


def test_compressed_input(sim_frames, trained, tmp_path):
    topic = "/camera/image_raw/compressed"
    t = [1_700_000_000_000_000_000 + i * 50_000_000 for i in range(4)]
    msgs = [compressed_msg(t[i], sim_frames[i]) for i in range(3)]
    cut = bytes(msgs[2].data[: len(msgs[2].data) // 2])
    records = [(topic, COMPRESSED_IMAGE, t[i], m) for i, m in enumerate(msgs)]
    records.append((topic, COMPRESSED_IMAGE, t[3], compressed_msg(t[3], None, data=cut)))
    bag = write_bag(tmp_path / "comp", records)
    r = replay(bag, tmp_path / "out", trained["onnx"], progress=False)
    assert r["image_topic"] == topic and r["frames"] == 3
    assert r["skipped"] == {"corrupt_compressed": 1}
    got = read_bag(tmp_path / "out")
    assert len(got[topic]) == 4 and got[topic][0][1].format == "jpeg"
    det = Detector(trained["onnx"])
    for (_, m), (_, h) in zip(got[topic], got[OUT["heatmap"]]):
        rgb = cv2.cvtColor(cv2.imdecode(np.asarray(m.data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(to_array(h), det.heatmap(rgb))


def _node_outputs(model, frames, ns: str) -> list[dict]:
    """The real node (subprocess, real DDS) with `model` fed `frames` ([(stamp, Image)]): per
    frame, {key: the first output message of that stamp} of each of its image outputs."""
    from ros_harness import SENSOR_QOS, NodeProcess, Peer, wait_for
    from ros_harness import image_msg as ros_image_msg
    from sensor_msgs.msg import Image

    from flowclas_ros.runtime.pipeline import stamp_ns as ros_stamp

    topics = output_topics(ns)
    peer = Peer("flowclas_replay_peer")
    for topic in topics.values():
        peer.subscribe(Image, topic)
    proc = NodeProcess({"model_path": model}, ns, remap={"image": f"{ns}/camera/image_raw"})
    pub = peer.node.create_publisher(Image, f"{ns}/camera/image_raw", SENSOR_QOS)
    outputs = []
    try:
        wait_for(lambda: pub.get_subscription_count() > 0 and
                 all(peer.node.count_publishers(t) > 0 for t in topics.values()), 60,
                 "the node to come up:\n" + proc.log)
        for i, (st, m) in enumerate(frames):
            rgb = np.asarray(m.data).reshape(m.height, m.width, 3)
            msg = ros_image_msg(rgb, m.encoding, st, m.header.frame_id)

            def answered(st=st):
                got = {k: [x for x in peer.messages(t) if ros_stamp(x) == st]
                       for k, t in topics.items()}
                return got if all(got.values()) else None

            deadline, got = time.monotonic() + 30, None
            while got is None and time.monotonic() < deadline:
                pub.publish(msg)  # re-sent: best-effort QoS may drop one
                try:
                    got = wait_for(answered, 1.0, "outputs")
                except TimeoutError:
                    pass
            assert got, f"no node output for frame {i}:\n{proc.log}"
            outputs.append({key: got[key][0] for key in topics})
    finally:
        rc = proc.interrupt()
        assert rc == 0, proc.log
        peer.close()
    return outputs


def test_the_node_gives_the_same_heatmaps_on_the_same_frames(replayed, sim, trained):
    """The real node (subprocess, real DDS) fed the bag's first 3 frames vs the replay output."""
    _, out, _ = replayed
    replay_out = read_bag(out)
    frames = [(stamp_ns(m), m) for _, m in read_bag(sim / "bag")[IMAGE_TOPIC][:3]]
    for i, got in enumerate(_node_outputs(trained["onnx"], frames, "/fc_replay")):
        for key, topic in OUT.items():
            node_msg = got[key]
            bag_msg = replay_out[topic][i][1]
            assert node_msg.header.frame_id == bag_msg.header.frame_id == FRAME_ID
            assert node_msg.encoding == bag_msg.encoding == ENCODINGS[key]
            if key == "heatmap":
                np.testing.assert_allclose(to_array(node_msg), to_array(bag_msg), rtol=0,
                                           atol=1e-6)
            else:
                np.testing.assert_array_equal(to_array(node_msg), to_array(bag_msg))


def test_the_region_stage_gives_the_same_mask_in_node_replay_and_evaluate(sim, tmp_path):
    """The shipped `fast` model with the region-evidence stage (runtime/regions.py) set so that
    it fires on these frames (the tiny test model's smooth maps enclose no region): the real
    node, replay and the evaluator's path give the same heatmap and mask on the same frames,
    and they differ from the same model without the stage."""
    from flowclas_ros.deploy.onnx_metadata import set_region_evidence
    from flowclas_ros.runtime.model_info import resolve_model_path
    from flowclas_ros.runtime.regions import RegionEvidence

    frames = [(stamp_ns(m), m) for _, m in read_bag(sim / "bag")[IMAGE_TOPIC][:3]]
    rgbs = [np.asarray(m.data).reshape(m.height, m.width, 3) for _, m in frames]
    shipped = resolve_model_path("fast")
    plain = Detector(shipped)
    plain_heat = [plain.heatmap(rgb) for rgb in rgbs]
    scores = np.concatenate([plain.backend(plain.prepare(rgb)[0][None])[0].ravel() for rgb in rgbs])
    for q in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):  # an outline level at which the stage fires here
        cfg = RegionEvidence(edge_score=float(np.quantile(scores, q)), close_px=3,
                             max_colour_std=255.0, min_area_px=1, max_area=1.0)
        fires = Detector(shipped, regions=cfg)
        if any(not np.array_equal(fires.heatmap(rgb), h) for rgb, h in zip(rgbs, plain_heat)):
            break
    model = tmp_path / "regions.onnx"
    set_region_evidence(shipped, model, cfg)
    det = Detector(model)
    assert det.regions == cfg and Detector(model, regions="off").regions is None
    heat = [det.heatmap(rgb) for rgb in rgbs]  # the evaluator's path
    assert any(not np.array_equal(h, p) for h, p in zip(heat, plain_heat))
    _same_in_node_replay_and_evaluate(sim, tmp_path, model, det, frames, heat, "/fc_regions")

def test_the_zoomed_band_gives_the_same_mask_in_node_replay_and_evaluate(sim, tmp_path):
    """The shipped `fast` model carrying the zoomed band (runtime/zoom_band.py; place and scale
    set by hand, threshold kept): the real node, replay and the evaluator's path give the same
    heatmap and mask on the same frames, and the band changed them."""
    from flowclas_ros.deploy.onnx_metadata import set_zoom_band
    from flowclas_ros.runtime.model_info import read_model_info, resolve_model_path
    from flowclas_ros.runtime.zoom_band import ZoomBand

    frames = [(stamp_ns(m), m) for _, m in read_bag(sim / "bag")[IMAGE_TOPIC][:3]]
    rgbs = [np.asarray(m.data).reshape(m.height, m.width, 3) for _, m in frames]
    shipped = resolve_model_path("fast")
    band = ZoomBand(center=0.55, zoom=2.0, scale=1.5)
    model = tmp_path / "zoomed.onnx"
    set_zoom_band(shipped, model, band, read_model_info(shipped).threshold, "test")
    det = Detector(model)
    assert det.zoom == band and Detector(model, zoom="off").zoom is None
    heat = [det.heatmap(rgb) for rgb in rgbs]  # the evaluator's path
    plain = [Detector(shipped).heatmap(rgb) for rgb in rgbs]
    assert all(not np.array_equal(h, p) for h, p in zip(heat, plain))
    _same_in_node_replay_and_evaluate(sim, tmp_path, model, det, frames, heat, "/fc_zoom")


def _same_in_node_replay_and_evaluate(sim, tmp_path, model, det, frames, heat, namespace):
    """The real node, replay and the evaluator on `model` give `heat` (the evaluator's path,
    already computed) and its mask on the bag's first frames."""
    masks = [threshold_components(h, det.threshold, 50)[0] for h in heat]
    r = replay(sim / "bag", tmp_path / "out", model, gt_topic=GT_TOPIC, progress=False)
    replayed_bag = read_bag(tmp_path / "out")
    e = evaluate(sim, model, progress=False)
    assert r["auprc"] == pytest.approx(e["auprc"], abs=1e-6)
    node = _node_outputs(model, frames, namespace)
    for i in range(len(frames)):
        np.testing.assert_array_equal(to_array(replayed_bag[OUT["heatmap"]][i][1]), heat[i])
        np.testing.assert_array_equal(to_array(replayed_bag[OUT["mask"]][i][1]), masks[i])
        np.testing.assert_allclose(to_array(node[i]["heatmap"]), heat[i], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(to_array(node[i]["mask"]), masks[i])


def _node_outputs_with_depth(model, frames, ns: str) -> tuple[list[np.ndarray], dict[str, str]]:
    """The real node (subprocess, real DDS, `use_depth`) fed `frames` ([(stamp, Image, depth Image,
    CameraInfo)] from a bag): per frame the heatmaps it published for that stamp, and its last
    diagnostics. Depth and CameraInfo go first, as an RGB-D driver's usually arrive; a frame is
    sent again (all three) until the node answers it, as best-effort DDS may drop one."""
    from diagnostic_msgs.msg import DiagnosticArray
    from ros_harness import NodeProcess, Peer, wait_for
    from ros_harness import image_msg as ros_image_msg
    from sensor_msgs.msg import CameraInfo, Image

    from flowclas_ros.runtime.pipeline import stamp_ns as ros_stamp

    heat_topic = output_topics(ns)["heatmap"]
    cam = f"{ns}/camera"
    peer = Peer("flowclas_depth_regions_peer")
    peer.subscribe(Image, heat_topic)
    peer.subscribe(DiagnosticArray, "/diagnostics")
    proc = NodeProcess({"model_path": model, "use_depth": True, "diagnostics_period": 0.2}, ns,
                       remap={"image": f"{cam}/image_raw", "depth/image": f"{cam}/depth/image_raw",
                              "camera_info": f"{cam}/camera_info"})
    pubs = {"image": peer.node.create_publisher(Image, f"{cam}/image_raw", 10),
            "depth": peer.node.create_publisher(Image, f"{cam}/depth/image_raw", 10),
            "info": peer.node.create_publisher(CameraInfo, f"{cam}/camera_info", 10)}
    heats: list[list[np.ndarray]] = []
    try:
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in pubs.values())
                 and peer.node.count_publishers(heat_topic) > 0, 60, "the node to come up:\n" + proc.log)
        for st, m, d, info in frames:
            rgb = np.asarray(m.data).reshape(m.height, m.width, 3)
            depth = np.frombuffer(bytes(d.data), np.uint16).reshape(d.height, d.width)
            k = CameraInfo(height=info.height, width=info.width, k=list(info.k))
            k.header.stamp.sec, k.header.stamp.nanosec = divmod(st, 10**9)
            k.header.frame_id = FRAME_ID
            deadline, got = time.monotonic() + 40, []
            while not got and time.monotonic() < deadline:
                pubs["info"].publish(k)
                pubs["depth"].publish(ros_image_msg(depth, "16UC1", st, FRAME_ID))
                time.sleep(0.3)  # the depth is cached before its colour frame is processed
                pubs["image"].publish(ros_image_msg(rgb, m.encoding, st, FRAME_ID))
                try:
                    got = wait_for(lambda st=st: [x for x in peer.messages(heat_topic) if ros_stamp(x) == st],
                                   1.5, "heatmap")
                except TimeoutError:
                    pass
            assert got, f"no node output for stamp {st}:\n{proc.log}"
            heats.append([to_array(x) for x in got])
        time.sleep(0.5)  # one more diagnostics period
        mine = [s for msg in peer.messages("/diagnostics") for s in msg.status if s.name.startswith(f"{ns}/")]
        diag = {kv.key: kv.value for kv in mine[-1].values} if mine else {}
    finally:
        rc = proc.interrupt()
        assert rc == 0, proc.log
        peer.close()
    return heats, diag


def test_the_depth_region_stage_gives_the_same_mask_in_node_replay_and_evaluate(tmp_path_factory, tmp_path):
    """`sim --bag --depth` frames (the measured depth in the layout and, identical, in the bag) and
    the shipped `rgbd` model (`fast` carrying the depth region stage, runtime/depth_regions.py):
    the evaluator, replay and the real node with `use_depth` (over DDS) give the same heatmap and
    mask, the stage lifted every frame, and the result differs from the same model without it."""
    from flowclas_ros.data.depth_files import read_camera_info, read_depth_m
    from flowclas_ros.runtime.model_info import resolve_model_path

    root = tmp_path_factory.mktemp("sim_depth")
    assert cli.main(["sim", "--split", "val", "-n", "3", "--out", str(root), "--bag", "--depth"]) == 0
    model = resolve_model_path("rgbd")
    det, plain = Detector(model), Detector(model, depth_regions="off")
    assert det.depth_regions is not None and plain.depth_regions is None
    assert Detector("fast").depth_regions is None  # the colour-only default does not carry it
    k = read_camera_info(root)
    heat, masks = [], []
    for s in generic_layout(root):  # the evaluator's path
        rgb = read_image_rgb(s.image_path)
        d = det.detect(rgb, "rgb8", read_depth_m(s.depth_path, rgb.shape[:2]), k)
        assert d.depth_stage == "lifted"
        assert not np.array_equal(d.heatmap, plain.heatmap(rgb))
        heat.append(d.heatmap)
        masks.append(threshold_components(d.heatmap, det.threshold, 50)[0])  # the node's min area
    e = evaluate(root, model, progress=False)
    assert e["depth_stage"] == {"lifted": 3}
    assert evaluate(root, model, progress=False, depth_regions="off")["depth_stage"] == {"off": 3}
    r = replay(root / "bag", tmp_path / "out", model, gt_topic=GT_TOPIC, progress=False)
    assert r["depth_stage"] == {"lifted": 3} and r["auprc"] == pytest.approx(e["auprc"], abs=1e-6)
    from flowclas_ros.eval.fleet import run_fleet  # fleet runs, of the folder and of the bag, too

    settings = {"layout": "generic", "layout_options": {}, "min_pred_area": 50, "min_gt_area": 10,
                "image_score": "max", "image_top_k": 0.01}
    for kind, data, s in (("evaluate", root, settings), ("replay", root / "bag", {"gt_topic": GT_TOPIC})):
        f = run_fleet(kind, [str(data)], tmp_path / f"fleet_{kind}", model, s, workers=1, progress=False)
        assert f["pooled"]["depth_stage"] == {"lifted": 3}, kind
        assert f["pooled"]["auprc"] == pytest.approx(e["auprc"], abs=1e-6), kind
    replayed = read_bag(tmp_path / "out")
    bag = read_bag(root / "bag")
    for i in range(3):
        np.testing.assert_array_equal(to_array(replayed[OUT["heatmap"]][i][1]), heat[i])
        np.testing.assert_array_equal(to_array(replayed[OUT["mask"]][i][1]), masks[i])
    frames = [(stamp_ns(m), m, bag[DEPTH_TOPIC][i][1], bag[CAMERA_INFO_TOPIC][i][1])
              for i, (_, m) in enumerate(bag[IMAGE_TOPIC])]
    node_heats, diag = _node_outputs_with_depth(model, frames, "/fc_depth_regions")
    for i, got in enumerate(node_heats):  # a frame processed before its depth came has no stage
        assert any(np.allclose(h, heat[i], rtol=0, atol=1e-6) for h in got), f"frame {i}"
    assert int(diag.get("depth_regions_lifted", 0)) >= 3, diag
