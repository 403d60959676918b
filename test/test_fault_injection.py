"""Fault injection: random and damaged input into every reader of untrusted data. Each either
works or raises its one documented error type (ImageError, ConfigError, a one-line bag error or
counted corruption), never anything else. Property-based (hypothesis), with bounded examples so
the default suite stays fast; the 10 000-frame soak is marked slow."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowclas_ros.config import ConfigError, config_from_dict, load_config
from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.rosbag import IMAGE, chunk_crc_writer, typestore
from flowclas_ros.eval.replay import replay
from flowclas_ros.runtime.images import SUPPORTED_ENCODINGS, ImageError
from flowclas_ros.runtime.pipeline import decode_compressed_frame, decode_image_fields

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_rgb(rgb: np.ndarray) -> None:
    assert rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8


# ---------------------------------------------------------------- raw Image fields


@FAST
@given(height=st.integers(0, 40), width=st.integers(0, 40),
       encoding=st.one_of(st.sampled_from(SUPPORTED_ENCODINGS), st.text(max_size=12)),
       step=st.integers(0, 400), is_bigendian=st.booleans(), data=st.binary(max_size=4096))
def test_random_image_fields_decode_or_raise_image_error(height, width, encoding, step,
                                                         is_bigendian, data):
    try:
        rgb = decode_image_fields(data, height, width, encoding, step, is_bigendian)
    except ImageError:
        return
    check_rgb(rgb)
    assert rgb.shape[:2] == (height, width)


@FAST
@given(height=st.integers(1, 24), width=st.integers(1, 24),
       encoding=st.sampled_from(SUPPORTED_ENCODINGS), pad=st.integers(0, 8), seed=st.integers(0, 2**32 - 1))
def test_well_formed_random_pixels_decode(height, width, encoding, pad, seed):
    from flowclas_ros.runtime.images import bytes_per_pixel

    bpp = bytes_per_pixel(encoding)
    step = width * bpp + pad * (4 if encoding == "32FC1" else 2 if "16" in encoding else 1)
    rng = np.random.default_rng(seed)
    if encoding == "32FC1":
        rows = rng.random((height, step // 4), dtype=np.float32)
        data = rows.tobytes()
    else:
        data = rng.integers(0, 256, height * step, dtype=np.uint8).tobytes()
    check_rgb(decode_image_fields(data, height, width, encoding, step, False))


# ---------------------------------------------------------------- compressed frames

_FORMATS = ["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "tiff",
            "webp", "", "h264", "jpeg; png"]
_MAGICS = [b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"RIFF"]


@FAST
@given(fmt=st.one_of(st.sampled_from(_FORMATS), st.text(max_size=30)),
       magic=st.sampled_from(_MAGICS), body=st.binary(max_size=2048))
def test_random_bytes_as_compressed_frames(fmt, magic, body):
    try:
        rgb = decode_compressed_frame(magic + body, fmt)
    except ImageError:
        return
    check_rgb(rgb)


def _encoded() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (9, 9), 0)
    return {ext: cv2.imencode("." + ext, img)[1].tobytes() for ext in ("jpeg", "png", "webp", "tiff")}


ENCODED = _encoded()


@FAST
@given(fmt=st.sampled_from(sorted(ENCODED)), cut=st.floats(0.0, 1.0),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
       tail=st.binary(max_size=16))
def test_damaged_real_frames(fmt, cut, flips, tail):
    data = bytearray(ENCODED[fmt])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    data = bytes(data[: max(1, int(len(data) * cut))]) + tail
    try:
        rgb = decode_compressed_frame(data, fmt)
    except ImageError:
        return
    check_rgb(rgb)


# ---------------------------------------------------------------- config loader

_yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_yaml_values = st.recursive(_yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
_sections = ["seed", "model", "data", "outlier_exposure", "loss", "train", "calibration",
             "augmentation", "name"]


@FAST
@given(text=st.text(max_size=400))
def test_random_yaml_text_is_a_config_or_a_config_error(text):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            load_config(path)
        except ConfigError as exc:
            assert len(str(exc)) < 2000


@FAST
@given(data=st.dictionaries(st.sampled_from(_sections), _yaml_values, max_size=6))
def test_random_config_structures_are_a_config_or_a_config_error(data):
    try:
        config_from_dict(data)
    except ConfigError as exc:
        assert len(str(exc)) < 2000
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except ConfigError as exc:
            assert len(str(exc)) < 2000


# ---------------------------------------------------------------- bags into replay

T0, PERIOD = 1_700_000_000_000_000_000, 100_000_000


@pytest.fixture(scope="module")
def product_bag(tmp_path_factory) -> Path:
    """6 frames of 300x400 through the product's writer (CRCs; ~3 chunks)."""
    from test_bags import image_msg

    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("fi") / "bag"
    ts = typestore()
    with chunk_crc_writer(path) as w:
        conn = w.add_connection("/camera/image_raw", IMAGE, typestore=ts)
        for i in range(6):
            t = T0 + i * PERIOD
            w.write(conn, t, ts.serialize_cdr(
                image_msg(t, rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)), IMAGE))
    return path


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
       flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 7)), max_size=6),
       keep_metadata=st.booleans())
def test_truncated_and_bit_flipped_bags_into_replay(product_bag, trained, cut, flips, keep_metadata):
    with tempfile.TemporaryDirectory() as d:
        bag = Path(d) / "bag"
        shutil.copytree(product_bag, bag)
        if not keep_metadata:
            (bag / "metadata.yaml").unlink()
        mcap = next(bag.glob("*.mcap"))
        data = bytearray(mcap.read_bytes())
        for where, bit in flips:
            data[int(where * (len(data) - 1))] ^= 1 << bit
        if cut is not None:
            data = data[: int(len(data) * cut)]
        mcap.write_bytes(bytes(data))
        try:
            r = replay(bag, Path(d) / "out", trained["onnx"], progress=False)
        except DatasetError as exc:  # BagError: one clean line
            assert "\n" not in str(exc) and len(str(exc)) < 2000
            return
        assert r["frames"] <= 6 and r["corrupt_chunks"] >= 0 and isinstance(r["skipped"], dict)


# ---------------------------------------------------------------- soak


@pytest.mark.slow
def test_soak_10000_frames_memory_flat(trained):
    """10 000 compressed frames (some damaged) through the node's frame path: RSS stays flat."""
    from flowclas_ros.runtime.detector import Detector
    from flowclas_ros.runtime.pipeline import run_frame

    det = Detector(trained["onnx"])
    rng = np.random.default_rng(0)
    frames = [cv2.imencode(".jpg", rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))[1].tobytes()
              for _ in range(16)]
    bad = frames[0][: len(frames[0]) // 2] + b"\xff\xd9"

    def rss_mb() -> float:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    corrupt = 0
    for i in range(10_000):
        if i == 1000:
            base = rss_mb()
        try:
            rgb = decode_compressed_frame(bad if i % 50 == 0 else frames[i % 16], "jpeg")
        except ImageError:
            corrupt += 1
            continue
        run_frame(det, rgb)
    assert corrupt == 200
    assert rss_mb() - base < 30, (base, rss_mb())
