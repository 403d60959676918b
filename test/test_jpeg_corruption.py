"""Damaged JPEGs that libjpeg decodes "successfully" (a cut re-terminated with an end marker,
bytes erased in the entropy-coded data) are corrupt frames, and valid JPEGs of every kind
still decode."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.data.files import DatasetError, read_image_rgb
from flowclas_ros.runtime.images import ImageError, decode_compressed, imdecode_checked


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur((rng.random((240, 320, 3)) * 255).astype(np.uint8), (21, 21), 0)


def jpeg(img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, list(params))
    assert ok
    return buf.tobytes()


def damaged(data: bytes) -> dict[str, bytes]:
    """Damage libjpeg decodes without an error: a cut closed with an end marker (a writer that
    finishes the file it could not fill), and 8 bytes of the entropy-coded data erased to 0xFF
    (what a failed flash page reads as). Bytes flipped inside the Huffman data often resynchronise
    without any sign libjpeg can see, so those are caught only sometimes (see decode_compressed)."""
    erased = bytearray(data)
    mid = len(data) // 2
    erased[mid:mid + 8] = b"\xff" * 8
    return {"cut_and_reterminated": data[: len(data) // 2] + b"\xff\xd9",
            "bytes_erased": bytes(erased)}


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_JPEG_QUALITY, 20), (cv2.IMWRITE_JPEG_QUALITY, 100),
                                    (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_OPTIMIZE, 1),
                                    (cv2.IMWRITE_JPEG_RST_INTERVAL, 4)])
def test_valid_jpegs_decode_without_a_warning(picture, params):
    data = jpeg(picture, *params)
    for variant in (data, data + b"\x00" * 64 + b"camera metadata"):  # bytes after the end marker
        image, encoding = decode_compressed(variant, "jpeg")
        assert encoding == "bgr8" and image.shape == picture.shape
    grey, encoding = decode_compressed(jpeg(picture[..., 0]), "jpeg")
    assert encoding == "mono8"


@pytest.mark.parametrize("kind", ["cut_and_reterminated", "bytes_erased"])
def test_damaged_jpegs_are_corrupt_frames(picture, kind):
    data = damaged(jpeg(picture))[kind]
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # cv2: "fine"
    with pytest.raises(ImageError, match="libjpeg warning .*Corrupt JPEG data") as exc:
        decode_compressed(data, "rgb8; jpeg compressed bgr8")
    assert exc.value.kind == "corrupt_compressed"


def test_other_stderr_output_is_passed_on(picture, capfd):
    data = damaged(jpeg(picture))["cut_and_reterminated"]
    image, warning = imdecode_checked(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None and warning.startswith("Corrupt JPEG data")
    os.write(2, b"before\n")
    imdecode_checked(np.frombuffer(jpeg(picture), np.uint8), cv2.IMREAD_UNCHANGED)
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "before\nafter\n" in err and "Corrupt JPEG" not in err  # the warning is consumed


def test_damaged_jpeg_files_are_per_file_errors_in_detect(picture, tmp_path, trained, capsys):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg(picture))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(damaged(jpeg(picture))["cut_and_reterminated"])
    with pytest.raises(DatasetError, match="damaged JPEG"):
        read_image_rgb(bad)
    assert cli.main(["detect", str(good), str(bad), "--model", str(trained["onnx"])]) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and '"image"' in out and "good.jpg" in out
    assert err.count("\n") == 1 and "bad.jpg is a damaged JPEG (Corrupt JPEG data" in err
