"""rosbag2 logs as data: real bags written and read by `rosbags`, the salvage of damaged MCAP
files, the `rosbag2` layout's frame cache, and the real trainer on a bag as its inlier source."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_config, write_config
from rosbags.rosbag2 import StoragePlugin, Writer

from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.data.generic import generic_layout
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.data.rosbag import COMPRESSED_IMAGE, IMAGE, Bag, BagError, deserialize, typestore
from flowclas_ros.runtime.images import to_msg_fields
from flowclas_ros.runtime.pipeline import stamp_ns

T0 = 1_700_000_000_000_000_000
PERIOD = 100_000_000
TOPIC = "/cam/image"


# ---------------------------------------------------------------- bag writing helpers


def image_msg(stamp: int, array: np.ndarray, encoding: str = "rgb8", step: int | None = None,
              frame_id: str = "cam") -> object:
    """A rosbags sensor_msgs/Image; ``step`` overrides the natural row length (a bad frame)."""
    ts = typestore()
    data, natural = to_msg_fields(array, encoding)
    return ts.types[IMAGE](
        header=_header(stamp, frame_id), height=array.shape[0], width=array.shape[1],
        encoding=encoding, is_bigendian=0, step=natural if step is None else step,
        data=np.frombuffer(data, np.uint8))


def compressed_msg(stamp: int, rgb: np.ndarray, ext: str = ".jpg", data: bytes | None = None,
                   frame_id: str = "cam") -> object:
    if data is None:
        ok, enc = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        data = enc.tobytes()
    return typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp, frame_id), format=ext.lstrip(".").replace("jpg", "jpeg"),
        data=np.frombuffer(data, np.uint8))


def _header(stamp: int, frame_id: str) -> object:
    ts = typestore()
    return ts.types["std_msgs/msg/Header"](
        stamp=ts.types["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id=frame_id)


def write_bag(path: Path, records: list[tuple[str, str, int, object]],
              storage: StoragePlugin = StoragePlugin.MCAP) -> Path:
    """(topic, msgtype, log time, message or raw CDR bytes) -> a rosbag2 directory."""
    ts = typestore()
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conns: dict[str, object] = {}
        for topic, msgtype, t, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            raw = msg if isinstance(msg, bytes) else ts.serialize_cdr(msg, msgtype)
            writer.write(conns[topic], t, raw)
    return path


def string_msg(text: str) -> object:
    return typestore().types["std_msgs/msg/String"](data=text)


@pytest.fixture(scope="module")
def toy_frames(toy_world) -> list[np.ndarray]:
    return [read_image_rgb(s.image_path) for s in generic_layout(toy_world / "train")]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private frame cache (the layout caches under $XDG_CACHE_HOME/flowclas_ros/bags)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "flowclas_ros" / "bags"


def toy_bag(path: Path, frames: list[np.ndarray], extra_image_topic: bool = False) -> Path:
    records = []
    for i, rgb in enumerate(frames):
        t = T0 + i * PERIOD
        records.append((TOPIC, IMAGE, t, image_msg(t, rgb)))
        records.append(("/cam/status", "std_msgs/msg/String", t, string_msg(f"frame {i}")))
        if extra_image_topic:
            records.append(("/cam/left", IMAGE, t, image_msg(t, rgb[..., 0], "mono8")))
    return write_bag(path, records)


# ---------------------------------------------------------------- the rosbag2 layout


def test_layout_extracts_every_nth_frame_once_into_the_cache(toy_frames, tmp_path, cache):
    frames = toy_frames[:7]
    bag = toy_bag(tmp_path / "log", frames)
    samples = load_layout("rosbag2", bag, stride=2)  # topic auto-picked: the only image topic
    assert len(samples) == 4
    for s, i in zip(samples, (0, 2, 4, 6)):
        assert s.id == f"{i:07d}_{T0 + i * PERIOD}" and s.label_path is None
        np.testing.assert_array_equal(read_image_rgb(s.image_path), frames[i])  # lossless
        assert cache in s.image_path.parents
    manifest = samples[0].image_path.parent.parent / "manifest.json"
    info = json.loads(manifest.read_text())
    assert (info["topic"], info["stride"], info["frames"], info["messages"]) == (TOPIC, 2, 4, 7)
    assert info["skipped"] == {}

    # second use: the cache is reused, not extracted again
    stamp = manifest.stat().st_mtime_ns
    again = load_layout("rosbag2", bag, topic=TOPIC, stride=2)
    assert [s.image_path for s in again] == [s.image_path for s in samples]
    assert manifest.stat().st_mtime_ns == stamp
    # every frame (stride 1) is another cache entry; a re-recorded bag is extracted afresh
    assert len(load_layout("rosbag2", bag)) == 7
    bag_file = next(bag.glob("*.mcap"))
    bag_file.write_bytes(bag_file.read_bytes())  # same content, new mtime
    fresh = load_layout("rosbag2", bag, stride=2)
    assert fresh[0].image_path.parent != samples[0].image_path.parent
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 3  # no temp left


def test_layout_decodes_frames_as_the_node_does_and_skips_bad_ones(toy_frames, tmp_path, cache):
    rgb = toy_frames[0]
    good_cdr = typestore().serialize_cdr(image_msg(T0, rgb), IMAGE)
    records = [
        (TOPIC, IMAGE, T0, image_msg(T0, np.ascontiguousarray(rgb[..., ::-1]), "bgr8")),
        (TOPIC, IMAGE, T0 + 1, image_msg(T0 + 1, rgb, step=rgb.shape[1] * 3 - 1)),  # bad step
        (TOPIC, IMAGE, T0 + 2, image_msg(T0 + 2, rgb[..., 1], "mono8")),
        (TOPIC, IMAGE, T0 + 3, bytes(good_cdr[:40])),  # CDR cut short
        (TOPIC, IMAGE, T0 + 4, image_msg(T0 + 4, rgb[..., 2].astype(np.uint16) * 257, "mono16")),
    ]
    samples = load_layout("rosbag2", write_bag(tmp_path / "mixed", records))
    got = [read_image_rgb(s.image_path) for s in samples]
    assert [s.id[:7] for s in samples] == ["0000000", "0000002", "0000004"]
    np.testing.assert_array_equal(got[0], rgb)  # bgr8 swapped back
    np.testing.assert_array_equal(got[1], np.repeat(rgb[..., 1:2], 3, axis=2))  # mono8 replicated
    np.testing.assert_array_equal(got[2], np.repeat(rgb[..., 2:3], 3, axis=2))  # mono16 scaled
    info = json.loads((samples[0].image_path.parent.parent / "manifest.json").read_text())
    assert info["skipped"] == {"bad_step": 1, "deserialize_error": 1}


def test_compressed_topic_in_a_sqlite3_bag(toy_frames, tmp_path, cache):
    records = [("/cam/image/compressed", COMPRESSED_IMAGE, T0 + i,
                compressed_msg(T0 + i, f, ".png")) for i, f in enumerate(toy_frames[:3])]
    bag = write_bag(tmp_path / "db", records, storage=StoragePlugin.SQLITE3)
    assert next(bag.glob("*.db3"))
    samples = load_layout("rosbag2", bag)
    assert len(samples) == 3
    for s, f in zip(samples, toy_frames):
        np.testing.assert_array_equal(read_image_rgb(s.image_path), f)


def test_layout_errors_name_what_exists(toy_frames, tmp_path, cache):
    with pytest.raises(DatasetError, match="does not exist"):
        load_layout("rosbag2", tmp_path / "absent")
    bag = toy_bag(tmp_path / "two", toy_frames[:2], extra_image_topic=True)
    with pytest.raises(DatasetError, match=r"2 image topics \(/cam/image, /cam/left\).*`topic:`"):
        load_layout("rosbag2", bag)
    with pytest.raises(BagError, match=r"/nope is not in bag .*/cam/left \(sensor_msgs/msg/Image\)"
                       r".*/cam/status \(std_msgs/msg/String\)"):
        load_layout("rosbag2", bag, topic="/nope")
    with pytest.raises(BagError, match="has type std_msgs/msg/String, expected"):
        load_layout("rosbag2", bag, topic="/cam/status")
    with pytest.raises(DatasetError, match="stride must be an integer >= 1"):
        load_layout("rosbag2", bag, topic=TOPIC, stride=0)
    empty = write_bag(tmp_path / "empty", [("/cam/status", "std_msgs/msg/String", T0,
                                            string_msg("x"))])
    with pytest.raises(DatasetError, match="no image topic"):
        load_layout("rosbag2", empty)
    assert not cache.exists() or not list(cache.iterdir())  # failures leave no cache entry


def test_rosbag2_layout_is_registered_with_the_layouts_registry():
    """`flowclas-ros train` only imports the layouts module: the layout must be there."""
    code = "from flowclas_ros.data.layouts import LAYOUTS; print(sorted(LAYOUTS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "'rosbag2'" in out.stdout, out.stdout


# ---------------------------------------------------------------- damaged bags


@pytest.fixture(scope="module")
def chunky(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """6 frames of 1.1 MB: rosbags closes an MCAP chunk after each one (chunks of 1 MiB)."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (600, 640, 3), dtype=np.uint8) for _ in range(6)]
    path = tmp_path_factory.mktemp("chunky") / "bag"
    write_bag(path, [(TOPIC, IMAGE, T0 + i * PERIOD, image_msg(T0 + i * PERIOD, f))
                     for i, f in enumerate(frames)])
    return path, frames


def _damaged_copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return next(dst.glob("*.mcap"))


def _check_frames(messages, frames, indices) -> None:
    assert [stamp_ns(deserialize(m)) for m in messages] == [T0 + i * PERIOD for i in indices]
    for m, i in zip(messages, indices):
        np.testing.assert_array_equal(deserialize(m).data, frames[i].reshape(-1))


def test_truncated_mcap_gives_every_complete_message_and_counts_the_rest(chunky, tmp_path):
    src, frames = chunky
    mcap = _damaged_copy(src, tmp_path / "cut")
    mcap.write_bytes(mcap.read_bytes()[: int(mcap.stat().st_size * 0.6)])
    bag = Bag(mcap.parent)
    assert bag.topics == {TOPIC: IMAGE} and bag.expected == {TOPIC: 6}  # metadata.yaml survives
    got = list(bag.messages([TOPIC]))
    _check_frames(got, frames, range(len(got)))
    assert 2 <= len(got) <= 4 and bag.lost(TOPIC) == 6 - len(got)
    assert bag.loss_reason == "truncated"
    assert any("truncated at byte" in n for n in bag.notes) and any("rosbags cannot open" in n
                                                                    for n in bag.notes)
    # the bare file (no metadata): same messages, unknown loss
    bare = Bag(mcap)
    assert len(list(bare.messages([TOPIC]))) == len(got) and bare.lost(TOPIC) is None


def test_corrupt_chunk_mid_bag_is_skipped_and_reading_goes_on(chunky, tmp_path):
    src, frames = chunky
    mcap = _damaged_copy(src, tmp_path / "corrupt")
    buf = bytearray(mcap.read_bytes())
    data_at = bytes(buf).find(frames[2].tobytes()[:256])
    # the message record holding frame 2: opcode 0x05 + a length reaching past its data
    rec = next(r for r in range(data_at - 9, data_at - 400, -1)
               if buf[r] == 0x05 and r + 9 + int.from_bytes(buf[r + 1:r + 9], "little")
               == data_at + frames[2].nbytes)
    buf[rec + 1:rec + 9] = (0xFFFFFFFF).to_bytes(8, "little")  # length overruns its chunk
    mcap.write_bytes(bytes(buf))
    bag = Bag(mcap.parent)  # the index is intact: rosbags opens it, and fails on chunk 3
    got = list(bag.messages([TOPIC]))
    _check_frames(got, frames, [0, 1, 3, 4, 5])  # before and after the bad chunk, once each
    assert bag.lost(TOPIC) == 1 and bag.loss_reason == "corrupt"
    assert any("rosbags stopped reading" in n for n in bag.notes)
    assert any("corrupt chunk skipped" in n for n in bag.notes)


def test_bag_without_metadata_from_a_crashed_recorder(chunky, tmp_path):
    src, frames = chunky
    mcap = _damaged_copy(src, tmp_path / "crashed")
    (mcap.parent / "metadata.yaml").unlink()  # rosbag2 writes it on close
    bag = Bag(mcap.parent)
    _check_frames(list(bag.messages([TOPIC])), frames, range(6))
    assert bag.lost(TOPIC) is None and bag.loss_reason is None


def test_not_a_bag(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="not a rosbag2 bag"):
        Bag(tmp_path / "junk")


# ---------------------------------------------------------------- training from a log


def test_config_takes_bag_sources(tmp_path):
    from flowclas_ros.config import ConfigError, config_from_dict

    base = tiny_config(tmp_path)
    src = {"root": "log", "layout": "rosbag2", "topic": TOPIC, "stride": 3}
    cfg = config_from_dict({**base, "data": {"train": [src]}}, tmp_path)
    s = cfg.data.train[0]
    assert (s.root, s.layout, s.topic, s.stride) == (str(tmp_path / "log"), "rosbag2", TOPIC, 3)
    with pytest.raises(ConfigError, match=r"data.train\[0\].stride: must be >= 1"):
        config_from_dict({**base, "data": {"train": [{**src, "stride": 0}]}}, tmp_path)
    with pytest.raises(ConfigError, match=r"data.train\[0\].topic: expected a string"):
        config_from_dict({**base, "data": {"train": [{**src, "topic": 5}]}}, tmp_path)
    # sources without options hash as before the options existed (checkpoints stay resumable)
    plain = config_from_dict({**base, "data": {"train": [{"root": "x"}]}}, tmp_path)
    d = plain.to_dict()
    del d["data"]["train"][0]["topic"], d["data"]["train"][0]["stride"]
    for later in ("sources", "procedural", "flow_negatives", "size_sampling", "camouflage", "flow_patches"):
        del d["outlier_exposure"][later]
    for later in ("score_guided_radius", "score_guided_eps"):  # model options added later
        del d["model"][later]
    for later in ("int8_features", "int8_calibration_frames"):
        del d["model"]["backbone"][later]
    del d["augmentation"]  # a whole section added later
    del d["train"]["crop_size"]  # a training option added later
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert plain.sha256() == hashlib.sha256(blob.encode()).hexdigest()
    assert plain.sha256() != cfg.sha256()


def test_train_a_few_steps_with_a_bag_as_the_inlier_source(toy_world, toy_frames, tmp_path,
                                                           cache):
    from flowclas_ros.config import load_config
    from flowclas_ros.training.batches import TrainingFrames
    from flowclas_ros.training.checkpoint import load_checkpoint
    from flowclas_ros.training.loop import train

    bag = toy_bag(tmp_path / "normal_operation", toy_frames, extra_image_topic=True)
    raw = tiny_config(toy_world, data={"train": [{"root": str(bag), "layout": "rosbag2",
                                                  "topic": TOPIC, "stride": 2}]},
                      train={"max_steps": 3, "checkpoint_every": 3, "log_every": 1})
    cfg = load_config(write_config(tmp_path / "bag.yaml", raw))
    frames = TrainingFrames(cfg)
    assert len(frames) == len(toy_frames) // 2  # every 2nd frame of the bag
    assert all(cache in s.image_path.parents for s in frames.samples)
    np.testing.assert_array_equal(frames.read(1)[0], toy_frames[2])
    assert not frames.read(1)[1].any()  # log frames are inliers

    ckpt = load_checkpoint(train(cfg, tmp_path / "run", progress=False))
    assert ckpt["step"] == 3 and ckpt["calibration"]["threshold"] == 1.0
    assert ckpt["config"]["data"]["train"][0] == {"root": str(bag), "layout": "rosbag2",
                                                  "topic": TOPIC, "stride": 2}
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    assert any(r["con"] > 0 for r in log)  # outlier exposure from the OE bank was pasted in


def test_quantize_calibrates_on_a_bag_of_the_robots_own_frames(trained, toy_frames, tmp_path, cache,
                                                               capsys):
    from flowclas_ros.cli import main as cli_main

    bag = toy_bag(tmp_path / "normal_operation", toy_frames, extra_image_topic=True)
    out = tmp_path / "robot_int8.onnx"
    assert cli_main(["quantize", str(trained["onnx"]), "--data", str(bag), "--layout", "rosbag2",
                     "--layout-opt", f"topic={TOPIC}", "--layout-opt", "stride=3", "--frames", "4",
                     "--out", str(out), "--no-timing", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["frames"] == 4 and out.is_file()
    # unlabelled log frames are all inlier: the carried-over threshold keeps their flag rate
    assert 0 <= r["inlier_flag_rate"] < 0.2 and r["rank_agreement"] > 0.99
    assert cli_main(["quantize", str(trained["onnx"]), "--data", str(bag), "--layout", "rosbag2",
                     "--layout-opt", "colour=red", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "bad layout option" in capsys.readouterr().err


def test_train_from_logs_in_one_command(toy_frames, tmp_path, cache, caplog, capsys):
    """`flowclas-ros train --bag LOG` with the built-in recipe: no config, no OE bank."""
    from flowclas_ros.cli import main as cli_main
    from flowclas_ros.training.checkpoint import checkpoint_config, load_checkpoint
    from flowclas_ros.training.recipes import logs_config

    bag = toy_bag(tmp_path / "normal", toy_frames[:12], extra_image_topic=True)
    small = ["--set", "model.input_size=[64,80]", "--set", "train.batch_size=2", "--set",
             "train.checkpoint_every=2", "--set", "model.flow.steps=1", "--set",
             "model.flow.hidden_channels=16", "--set", "loss.samples_per_class=16"]
    with caplog.at_level("WARNING"):
        rc = cli_main(["train", "--bag", str(bag), "--topic", TOPIC, "--stride", "2", "--out",
                       str(tmp_path / "run"), "--max-steps", "2", "--quiet", *small])
    assert rc == 0
    assert "no validation frames (--val)" in caplog.text and "0.1 %" in caplog.text
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    cfg = checkpoint_config(ckpt)
    src = cfg.data.train[0]
    assert (src.layout, src.topic, src.stride) == ("rosbag2", TOPIC, 2) and cfg.data.val is None
    assert cfg.outlier_exposure.source_weights() == {"procedural": 1.0}  # no bank needed
    assert cfg.model.flow.kernel_sizes == [3, 1, 1]  # the rest is the shipped default's recipe
    assert ckpt["calibration"]["frames"] == 6  # every 2nd of 12 log frames

    val_log = toy_bag(tmp_path / "val_log", toy_frames[12:16])
    cfg, warnings = logs_config([bag], TOPIC, 1, val=val_log)
    assert cfg.data.val.layout == "rosbag2" and "without labels" in warnings[0]
    cfg, warnings = logs_config([bag], TOPIC, 1, val=tmp_path, bank=tmp_path)
    assert cfg.data.val.layout == "generic" and warnings == []
    assert cfg.outlier_exposure.source_weights() == {"cutouts": 1.0, "procedural": 1.0}

    assert cli_main(["train", "--config", "x.yaml", "--topic", TOPIC]) == 2
    assert "--topic only apply with --bag" in capsys.readouterr().err


def test_train_from_logs_with_flow_patches(toy_frames, tmp_path, cache, capsys):
    """`train --bag LOG --oe flow_patches,procedural`: the patch generator is trained on the log's
    own frames, cached, and its patches pasted; a log with too few frames is one error line."""
    from flowclas_ros.cli import main as cli_main
    from flowclas_ros.training.checkpoint import checkpoint_config, load_checkpoint

    bag = toy_bag(tmp_path / "normal", toy_frames[:20])
    small = ["--set", "model.input_size=[64,80]", "--set", "train.batch_size=2", "--set",
             "model.flow.steps=1", "--set", "model.flow.hidden_channels=16", "--set",
             "loss.samples_per_class=16"]
    gen = [f"--set=outlier_exposure.flow_patches.{k}={v}" for k, v in (
        ("levels", 2), ("steps", 1), ("hidden_channels", 8), ("crop", 16), ("frame_scales", "[1]"),
        ("iterations", 10), ("batch_size", 8), ("sizes", "[16,32]"), ("bank_size", 8))]
    rc = cli_main(["train", "--bag", str(bag), "--topic", TOPIC, "--oe", "flow_patches,procedural",
                   "--out", str(tmp_path / "run"), "--max-steps", "2", "--quiet", *small, *gen])
    assert rc == 0
    cfg = checkpoint_config(load_checkpoint(tmp_path / "run" / "checkpoint.pt"))
    assert cfg.outlier_exposure.source_weights() == {"procedural": 1.0, "flow_patches": 1.0}
    patch_cache = cache.parent / "patch_flows"  # beside the bag cache, under $XDG_CACHE_HOME
    assert len(list(patch_cache.glob("*/generator.pt"))) == 1 and len(list(patch_cache.glob("*/bank-*.npz"))) == 1

    short = toy_bag(tmp_path / "short", toy_frames[:10])
    capsys.readouterr()
    assert cli_main(["train", "--bag", str(short), "--topic", TOPIC, "--oe", "flow_patches",
                     "--out", str(tmp_path / "run2"), "--max-steps", "1", "--quiet", *small, *gen]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs at least 16 training frames, data.train has 10" in err[0]
