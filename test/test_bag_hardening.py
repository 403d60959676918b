"""Hostile and damaged bags: bounded metadata, chunk CRCs written and checked, and the rule that
picks the camera topic (never the ground-truth labels)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_bags import PERIOD, T0, compressed_msg, image_msg, write_bag

from flowclas_ros import cli
from flowclas_ros.data.rosbag import (
    COMPRESSED_IMAGE,
    IMAGE,
    MAX_METADATA_BYTES,
    Bag,
    BagError,
    chunk_crc_writer,
    deserialize,
    not_a_camera,
    typestore,
)
from flowclas_ros.eval.replay import replay
from flowclas_ros.runtime.pipeline import stamp_ns

CAM, GT = "/camera/image_raw", "/camera/anomaly_gt"


def chunks(mcap: Path) -> list[tuple[int, int, int, int]]:
    """(record offset, data offset, data length, stored CRC) of every chunk record of an MCAP file."""
    b = mcap.read_bytes()
    pos, found = 8, []
    while pos + 9 <= len(b):
        op, length = b[pos], struct.unpack_from("<Q", b, pos + 1)[0]
        if op == 0x06:
            crc = struct.unpack_from("<I", b, pos + 9 + 24)[0]
            (n,) = struct.unpack_from("<I", b, pos + 9 + 28)
            at = pos + 9 + 32 + n
            (clen,) = struct.unpack_from("<Q", b, at)
            found.append((pos, at + 8, clen, crc))
        if op in (0x02, 0x0F):
            break
        pos += 9 + length
    return found


def crc_bag(path: Path, frames: list[np.ndarray]) -> Path:
    """The frames on CAM through the product's own bag writer (one 1 MiB chunk per ~2 frames)."""
    ts = typestore()
    with chunk_crc_writer(path) as w:
        conn = w.add_connection(CAM, IMAGE, typestore=ts)
        for i, f in enumerate(frames):
            t = T0 + i * PERIOD
            w.write(conn, t, ts.serialize_cdr(image_msg(t, f), IMAGE))
    return path


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (400, 640, 3), dtype=np.uint8) for _ in range(8)]


def small_bag(path: Path) -> Path:
    rgb = np.zeros((8, 8, 3), np.uint8)
    return write_bag(path, [(CAM, IMAGE, T0, image_msg(T0, rgb))])


def one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1000 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- metadata.yaml with limits

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(9))


@pytest.mark.parametrize("text, match", [
    (BILLION_LAUGHS, "aliases are not allowed"),
    ("rosbag2_bagfile_information:\n  x: " + "[" * 200 + "]" * 200 + "\n", "nested"),
    ("rosbag2_bagfile_information:\n  relative_file_paths: [../../etc/passwd]\n",
     "not inside the bag directory"),
    ("#" * (MAX_METADATA_BYTES + 1), f"larger than {MAX_METADATA_BYTES} bytes"),
])
def test_hostile_bag_metadata_is_one_line_exit_2(tmp_path, capsys, text, match):
    bag = small_bag(tmp_path / "bag")
    (bag / "metadata.yaml").write_text(text)
    with pytest.raises(BagError, match=match):
        Bag(bag)
    err = one_line_error(capsys, ["replay", str(bag), "--out", str(tmp_path / "out"), "--quiet"])
    assert match.split()[0] in err and "refusing to read the bag" in err
    assert not (tmp_path / "out").exists()


def test_damaged_but_harmless_metadata_still_reads_the_storage(tmp_path):
    bag = small_bag(tmp_path / "bag")
    for text in ("rosbag2_bagfile_information: [unclosed\n",
                 "rosbag2_bagfile_information:\n  relative_file_paths: 5\n"
                 "  topics_with_message_count: 7\n"):
        (bag / "metadata.yaml").write_text(text)
        b = Bag(bag)
        assert [stamp_ns(deserialize(m)) for m in b.messages([CAM])] == [T0]
    (bag / "metadata.yaml").unlink()
    (bag / "metadata.yaml").symlink_to("/dev/zero")
    with pytest.raises(BagError, match="not a regular file"):
        Bag(bag)


# ---------------------------------------------------------------- chunk CRCs


def test_product_bags_carry_chunk_crcs_and_flipped_bits_are_counted(frames, tmp_path):
    bag = crc_bag(tmp_path / "bag", frames)
    mcap = next(bag.glob("*.mcap"))
    found = chunks(mcap)
    assert len(found) >= 3
    raw = mcap.read_bytes()
    for _, at, n, crc in found:  # uncompressed chunks: the CRC of the data as stored
        assert crc != 0 and crc == zlib.crc32(raw[at:at + n])
    # one bit flipped inside the second chunk's records (in a frame's pixels)
    _, at, n, _ = found[1]
    buf = bytearray(raw)
    buf[at + n // 2] ^= 0x10
    mcap.write_bytes(bytes(buf))
    b = Bag(bag)
    got = list(b.messages([CAM]))
    assert b.corrupt_chunks == 1 and b.loss_reason == "corrupt"
    assert 0 < len(got) < len(frames) and b.lost(CAM) == len(frames) - len(got)
    for m in got:  # every frame delivered is intact: none from the damaged chunk
        i = (stamp_ns(deserialize(m)) - T0) // PERIOD
        np.testing.assert_array_equal(deserialize(m).data, frames[i].reshape(-1))


def test_replay_reports_corrupt_chunks(frames, trained, tmp_path, capsys):
    bag = crc_bag(tmp_path / "bag", frames[:5])
    mcap = next(bag.glob("*.mcap"))
    _, at, n, _ = chunks(mcap)[1]  # (the first also declares the channels)
    buf = bytearray(mcap.read_bytes())
    buf[at + n - 100] ^= 0x01
    mcap.write_bytes(bytes(buf))
    r = replay(bag, tmp_path / "out", trained["onnx"], progress=False)
    assert r["corrupt_chunks"] == 1 and r["skipped"] == {"corrupt": 5 - r["frames"]}
    assert 0 < r["frames"] < 5
    assert any("1 corrupt chunks" in w for w in r["warnings"])
    # replay's own output bag is written with CRCs too
    out = next((tmp_path / "out").glob("*.mcap"))
    assert all(crc != 0 for *_, crc in chunks(out))


# ---------------------------------------------------------------- which topic is the camera


def test_the_ground_truth_topic_is_never_taken_as_the_camera(tmp_path, capsys):
    rgb = np.zeros((8, 8, 3), np.uint8)
    label = np.zeros((8, 8), np.uint8)
    records = [(CAM, COMPRESSED_IMAGE, T0, compressed_msg(T0, rgb)),
               (GT, IMAGE, T0, image_msg(T0, label, "mono8"))]
    good = write_bag(tmp_path / "good", records)
    assert Bag(good).pick_image_topic() == CAM  # the camera, not the labels, without asking
    # the camera topic's type name damaged (same length): only the labels look like an Image
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in good.iterdir():
        (bad / f.name).write_bytes(f.read_bytes().replace(b"sensor_msgs/msg/CompressedImage",
                                                          b"sensor_msgs/msg/CompressedImagX"))
    b = Bag(bad)
    assert b.image_topics() == [GT]
    with pytest.raises(BagError, match=r"no image topic .* /camera/anomaly_gt is not taken as the "
                       r"camera: its name says it holds ground-truth labels"):
        b.pick_image_topic()
    err = one_line_error(capsys, ["replay", str(bad), "--out", str(tmp_path / "out"), "--quiet"])
    assert CAM in err and GT in err and "--image-topic" in err


@pytest.mark.parametrize("topic, camera", [
    ("/camera/image_raw", True), ("/camera/color/image_rect", True), ("/front/image", True),
    ("/camera/anomaly_gt", False), ("/camera/ground_truth", False), ("/labels", False),
    ("/camera/depth/image_raw", False), ("/flowclas_detector/obstacle_mask", False),
    ("/flowclas_detector/overlay", False), ("/seg/image", False),
])
def test_camera_name_rule(topic, camera):
    assert (not_a_camera(topic) is None) == camera
