"""Tests for flowclas_ros.runtime.images on real numpy / cv2 data (no mocks)."""

from __future__ import annotations

import array
import pickle
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from flowclas_ros.runtime.images import (
    IMAGE_ERROR_KINDS,
    PUBLISHABLE_ENCODINGS,
    SUPPORTED_ENCODINGS,
    ImageError,
    bytes_per_pixel,
    decode_compressed,
    encoded_image_size,
    image_from_fields,
    to_msg_fields,
    to_rgb8,
)

H, W = 6, 10

# encoding -> (dtype, channels), the layout the tests build arrays from.
LAYOUTS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def make_image(encoding: str, rng: np.random.Generator, h: int = H, w: int = W) -> np.ndarray:
    """Random image of the encoding's shape and dtype (32FC1 within [0, 1])."""
    dtype, channels = LAYOUTS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype is np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def raw_bytes(image: np.ndarray, big_endian: bool = False) -> bytes:
    """Message data of a compact image in the requested byte order."""
    return image.astype(image.dtype.newbyteorder(">" if big_endian else "<")).tobytes()


def padded(image: np.ndarray, pad: int, fill: int = 0xAB) -> tuple[bytearray, int]:
    """Message data whose rows carry ``pad`` extra bytes, and its step."""
    rows = np.frombuffer(raw_bytes(image), np.uint8).reshape(image.shape[0], -1)
    step = rows.shape[1] + pad
    out = np.full((image.shape[0], step), fill, np.uint8)
    out[:, : rows.shape[1]] = rows
    return bytearray(out.tobytes()), step


def raises_kind(kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Call ``fn`` expecting ImageError of ``kind``; return its message."""
    with pytest.raises(ImageError) as info:
        fn(*args, **kwargs)
    assert info.value.kind == kind, str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------- tables


def test_supported_encodings_and_error_kinds_are_the_documented_ones() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(LAYOUTS)
    assert set(PUBLISHABLE_ENCODINGS) == {"bgr8", "rgb8", "mono8", "32FC1", "mono16", "16UC1"}
    assert IMAGE_ERROR_KINDS == (
        "zero_size", "truncated", "oversized", "bad_step", "unsupported_encoding",
        "non_finite", "out_of_range", "corrupt_compressed", "bad_shape",
    )


@pytest.mark.parametrize("encoding", sorted(LAYOUTS))
def test_bytes_per_pixel(encoding: str) -> None:
    dtype, channels = LAYOUTS[encoding]
    assert bytes_per_pixel(encoding) == np.dtype(dtype).itemsize * channels


def test_bytes_per_pixel_unsupported() -> None:
    message = raises_kind("unsupported_encoding", bytes_per_pixel, "yuv422")
    assert "'yuv422'" in message and "rgb8" in message and "32FC1" in message


def test_image_error_is_value_error_and_pickles_with_kind() -> None:
    err = ImageError("truncated", "truncated image: data has 3 bytes")
    assert isinstance(err, ValueError)
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, ImageError)
    assert (clone.kind, str(clone)) == ("truncated", "truncated image: data has 3 bytes")


def test_image_error_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown ImageError kind 'oops'"):
        ImageError("oops", "whatever")


# --------------------------------------------------------------------------- image_from_fields


@pytest.mark.parametrize("encoding", sorted(LAYOUTS))
def test_image_from_fields_every_encoding_is_a_zero_copy_view(encoding: str, rng) -> None:
    image = make_image(encoding, rng)
    data = bytearray(raw_bytes(image))
    step = W * bytes_per_pixel(encoding)

    out = image_from_fields(data, H, W, encoding, step)

    assert out.shape == image.shape
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


@pytest.mark.parametrize("encoding", PUBLISHABLE_ENCODINGS)
def test_to_msg_fields_round_trip(encoding: str, rng) -> None:
    image = make_image(encoding, rng)

    data, step = to_msg_fields(image, encoding)

    assert type(data) is bytes
    assert step == W * bytes_per_pixel(encoding)
    assert len(data) == step * H
    back = image_from_fields(data, H, W, encoding, step)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize(
    "wrap",
    [
        bytes,
        bytearray,
        memoryview,
        lambda b: array.array("B", b),
        lambda b: np.frombuffer(b, np.uint8).copy(),
    ],
    ids=["bytes", "bytearray", "memoryview", "array.array", "ndarray"],
)
def test_image_from_fields_accepts_rclpy_and_numpy_containers(wrap, rng) -> None:
    image = make_image("bgr8", rng)
    data = wrap(raw_bytes(image))

    out = image_from_fields(data, H, W, "bgr8", W * 3)

    np.testing.assert_array_equal(out, image)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


def test_image_from_fields_bytes_gives_read_only_view(rng) -> None:
    image = make_image("mono8", rng)
    out = image_from_fields(raw_bytes(image), H, W, "mono8", W)
    assert not out.flags.writeable
    with pytest.raises(ValueError):
        out[0, 0] = 1


def test_image_from_fields_rejects_non_uint8_ndarray() -> None:
    with pytest.raises(TypeError, match="uint16"):
        image_from_fields(np.zeros(H * W, np.uint16), H, W, "mono8", W)


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "mono8", "mono16", "32FC1"])
def test_row_padding_is_sliced_off_in_a_view(encoding: str, rng) -> None:
    image = make_image(encoding, rng)
    pad = 8  # keeps step a multiple of every element size
    data, step = padded(image, pad)

    out = image_from_fields(data, H, W, encoding, step)

    np.testing.assert_array_equal(out, image)
    assert out.shape == image.shape
    assert out.strides[0] == step
    assert not out.flags.c_contiguous
    raw = np.frombuffer(data, np.uint8).reshape(H, step)
    assert np.shares_memory(out, raw)
    # Overwriting the padding leaves the view untouched; overwriting a pixel does not.
    raw[:, -pad:] = 0
    np.testing.assert_array_equal(out, image)
    raw[0, :] = 0
    assert (out[0] == 0).all()


def test_padded_view_converts_to_contiguous_rgb(rng) -> None:
    image = make_image("bgr8", rng)
    data, step = padded(image, pad=5)

    rgb = to_rgb8(image_from_fields(data, H, W, "bgr8", step), "bgr8")

    assert rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, image[:, :, ::-1])


def test_big_endian_mono16_is_swapped_to_native(rng) -> None:
    image = make_image("mono16", rng)
    image[0, 0] = 0x0102
    data = raw_bytes(image, big_endian=True)
    assert data[:2] == b"\x01\x02"

    out = image_from_fields(data, H, W, "mono16", W * 2, is_bigendian=True)

    assert out.dtype == np.dtype(np.uint16) and out.dtype.isnative
    assert out[0, 0] == 0x0102
    np.testing.assert_array_equal(out, image)
    # Reading the same bytes as little-endian gives the byte-swapped values.
    wrong = image_from_fields(data, H, W, "mono16", W * 2, is_bigendian=False)
    assert wrong[0, 0] == 0x0201


def test_big_endian_padded_32fc1(rng) -> None:
    image = make_image("32FC1", rng)
    big = image.astype(">f4")
    rows = np.frombuffer(big.tobytes(), np.uint8).reshape(H, -1)
    data = np.concatenate([rows, np.zeros((H, 4), np.uint8)], axis=1).tobytes()

    out = image_from_fields(data, H, W, "32FC1", W * 4 + 4, is_bigendian=True)

    assert out.dtype == np.dtype(np.float32) and out.dtype.isnative
    np.testing.assert_array_equal(out, image)


def test_is_bigendian_is_irrelevant_for_8_bit(rng) -> None:
    image = make_image("rgb8", rng)
    data = bytearray(raw_bytes(image))
    out = image_from_fields(data, H, W, "rgb8", W * 3, is_bigendian=True)
    np.testing.assert_array_equal(out, image)
    assert np.shares_memory(out, np.frombuffer(data, np.uint8))


# --------------------------------------------------------------------------- image_from_fields errors


def test_truncated_message_names_the_numbers() -> None:
    message = raises_kind("truncated", image_from_fields, bytes(1000), 480, 640, "rgb8", 1920)
    assert message == "truncated image: data has 1000 bytes, step*height = 921600 (step 1920, height 480)"


def test_oversized() -> None:
    message = raises_kind("oversized", image_from_fields, bytes(H * W + 3), H, W, "mono8", W)
    assert f"data has {H * W + 3} bytes" in message and f"step*height = {H * W}" in message


def test_zero_size() -> None:
    assert "height 0" in raises_kind("zero_size", image_from_fields, b"", 0, W, "mono8", W)
    assert "width 0" in raises_kind("zero_size", image_from_fields, b"", H, 0, "mono8", 0)


def test_step_smaller_than_row() -> None:
    message = raises_kind("bad_step", image_from_fields, bytes(H * 20), H, W, "rgb8", 20)
    assert "step 20" in message and "width*bytes_per_pixel = 30" in message and "3 bytes per pixel" in message


def test_step_not_multiple_of_element_size() -> None:
    message = raises_kind("bad_step", image_from_fields, bytes(H * 21), H, W, "mono16", 21)
    assert "step 21" in message and "2-byte" in message and "mono16" in message


def test_unsupported_encoding_names_it_and_lists_supported() -> None:
    message = raises_kind("unsupported_encoding", image_from_fields, bytes(H * W * 2), H, W, "yuv422", W * 2)
    assert "'yuv422'" in message
    assert all(enc in message for enc in SUPPORTED_ENCODINGS)


def test_validation_order() -> None:
    # Encoding first, then size, then step, then length.
    assert raises_kind("unsupported_encoding", image_from_fields, b"", 0, 0, "bayer_rggb8", 0)
    assert raises_kind("zero_size", image_from_fields, b"", 0, W, "rgb8", 1)
    assert raises_kind("bad_step", image_from_fields, b"", H, W, "rgb8", 1)
    assert raises_kind("truncated", image_from_fields, b"", H, W, "rgb8", W * 3)


def test_32fc1_non_finite_is_rejected_not_fixed(rng) -> None:
    image = make_image("32FC1", rng)
    image[2, 3] = np.nan
    image[4, 1] = np.inf
    message = raises_kind("non_finite", image_from_fields, raw_bytes(image), H, W, "32FC1", W * 4)
    assert f"2 of {H * W} pixels" in message and "row 2, col 3" in message


def test_32fc1_out_of_range_is_rejected_not_clipped(rng) -> None:
    image = make_image("32FC1", rng)
    image[0, 0] = 1.25
    image[1, 1] = -0.5
    message = raises_kind("out_of_range", image_from_fields, raw_bytes(image), H, W, "32FC1", W * 4)
    assert "[-0.5, 1.25]" in message and "[0, 1]" in message


def test_32fc1_bounds_are_inclusive() -> None:
    image = np.array([[0.0, 1.0]], np.float32)
    out = image_from_fields(raw_bytes(image), 1, 2, "32FC1", 8)
    np.testing.assert_array_equal(out, image)


# --------------------------------------------------------------------------- to_rgb8


RED = {
    "rgb8": [255, 0, 0],
    "bgr8": [0, 0, 255],
    "8UC3": [0, 0, 255],
    "rgba8": [255, 0, 0, 77],
    "bgra8": [0, 0, 255, 77],
}


@pytest.mark.parametrize("encoding", sorted(RED))
def test_to_rgb8_colour_order(encoding: str, rng) -> None:
    rgb = make_image("rgb8", rng)
    rgb[1, 2] = [255, 0, 0]
    native = rgb[:, :, ::-1] if encoding in ("bgr8", "8UC3") else rgb
    if encoding in ("rgba8", "bgra8"):
        alpha = np.full((H, W, 1), 77, np.uint8)
        native = np.concatenate([rgb[:, :, ::-1] if encoding == "bgra8" else rgb, alpha], axis=2)
    assert native[1, 2].tolist() == RED[encoding]

    out = to_rgb8(native, encoding)

    assert out.shape == (H, W, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert out[1, 2].tolist() == [255, 0, 0]
    np.testing.assert_array_equal(out, rgb)


def test_red_bgr8_message_is_red_after_round_trip() -> None:
    bgr = np.zeros((H, W, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in bgr order
    data, step = to_msg_fields(bgr, "bgr8")
    out = to_rgb8(image_from_fields(data, H, W, "bgr8", step), "bgr8")
    assert (out == [255, 0, 0]).all()


def test_to_rgb8_rgb8_is_a_contiguous_copy_of_a_view(rng) -> None:
    image = make_image("rgb8", rng)
    view = image[:, ::2]
    out = to_rgb8(view, "rgb8")
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_to_rgb8_mono_is_replicated(encoding: str, rng) -> None:
    image = make_image(encoding, rng)
    out = to_rgb8(image, encoding)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], image)


def test_to_rgb8_accepts_hxwx1_mono(rng) -> None:
    image = make_image("mono8", rng)
    np.testing.assert_array_equal(to_rgb8(image[:, :, None], "mono8"), to_rgb8(image, "mono8"))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_to_rgb8_16_bit_full_range_scaling(encoding: str) -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    out = to_rgb8(values, encoding)
    expected = np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)
    flat = out[:, :, 1].reshape(-1)
    assert (flat[0], flat[128], flat[129], flat[257], flat[65535]) == (0, 0, 1, 1, 255)


def test_to_rgb8_big_endian_16_bit_array() -> None:
    values = np.array([[0, 257, 65535]], dtype=">u2")
    assert to_rgb8(values, "mono16")[0, :, 0].tolist() == [0, 1, 255]


def test_to_rgb8_32fc1_scaling() -> None:
    values = np.array([[0.0, 1.0 / 255, 0.5, 1.0]], np.float32)
    out = to_rgb8(values, "32FC1")
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_to_rgb8_32fc1_invalid_values() -> None:
    nan = np.array([[0.5, np.nan]], np.float32)
    assert "1 of 2 pixels" in raises_kind("non_finite", to_rgb8, nan, "32FC1")
    assert "1.5" in raises_kind("out_of_range", to_rgb8, np.array([[0.5, 1.5]], np.float32), "32FC1")


@pytest.mark.parametrize(
    ("array_", "encoding", "fragment"),
    [
        (np.zeros((H, W), np.uint8), "bgr8", "expected HxWx3 uint8 array, got shape (6, 10) dtype uint8"),
        (np.zeros((H, W, 4), np.uint8), "rgb8", "got shape (6, 10, 4)"),
        (np.zeros((H, W), np.uint16), "mono8", "expected HxW uint8 array, got shape (6, 10) dtype uint16"),
        (np.zeros((H, W, 3), np.uint8), "mono8", "got shape (6, 10, 3)"),
        (np.zeros((H, W), np.float64), "32FC1", "dtype float64"),
        (np.zeros((H, W), np.uint8), "mono16", "expected HxW uint16"),
    ],
)
def test_to_rgb8_bad_shape(array_: np.ndarray, encoding: str, fragment: str) -> None:
    message = raises_kind("bad_shape", to_rgb8, array_, encoding)
    assert encoding in message and fragment in message


def test_to_rgb8_zero_size_and_unsupported() -> None:
    assert "(0, 4, 3)" in raises_kind("zero_size", to_rgb8, np.zeros((0, 4, 3), np.uint8), "bgr8")
    assert "'yuv422'" in raises_kind("unsupported_encoding", to_rgb8, np.zeros((2, 2), np.uint8), "yuv422")


# --------------------------------------------------------------------------- to_msg_fields


def test_to_msg_fields_compacts_non_contiguous_input(rng) -> None:
    image = make_image("bgr8", rng)
    view = image[:, 1:-1]
    data, step = to_msg_fields(view, "bgr8")
    assert step == (W - 2) * 3
    np.testing.assert_array_equal(image_from_fields(data, H, W - 2, "bgr8", step), view)


def test_to_msg_fields_writes_little_endian() -> None:
    data, step = to_msg_fields(np.array([[0x0102]], dtype=">u2"), "mono16")
    assert (data, step) == (b"\x02\x01", 2)


def test_to_msg_fields_errors() -> None:
    message = raises_kind("unsupported_encoding", to_msg_fields, np.zeros((H, W, 4), np.uint8), "rgba8")
    assert "'rgba8'" in message and "bgr8" in message
    assert "dtype float64" in raises_kind("bad_shape", to_msg_fields, np.zeros((H, W)), "32FC1")
    assert "expected HxWx3" in raises_kind("bad_shape", to_msg_fields, np.zeros((H, W), np.uint8), "rgb8")
    assert raises_kind("zero_size", to_msg_fields, np.zeros((0, W), np.uint8), "mono8")


# --------------------------------------------------------------------------- decode_compressed


def smooth_bgr(h: int = 48, w: int = 64) -> np.ndarray:
    """A gradient image, which JPEG reproduces closely."""
    y, x = np.mgrid[0:h, 0:w]
    channels = [x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)]
    return np.stack(channels, axis=2).astype(np.uint8)


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("format_", ["jpeg", "rgb8; jpeg compressed bgr8"])
def test_decode_colour_jpeg(format_: str) -> None:
    image = smooth_bgr()
    out, encoding = decode_compressed(encode(image, ".jpg"), format_)
    assert encoding == "bgr8"
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() < 4


def test_decode_mono_jpeg() -> None:
    gray = smooth_bgr()[:, :, 0]
    out, encoding = decode_compressed(array.array("B", encode(gray, ".jpg")), "mono8; jpeg compressed mono8")
    assert encoding == "mono8" and out.shape == gray.shape
    assert np.abs(out.astype(int) - gray).mean() < 4


@pytest.mark.parametrize(
    ("encoding", "format_"),
    [("bgr8", "bgr8; png compressed bgr8"), ("bgra8", "png"), ("mono8", "mono8; png compressed mono8"),
     ("mono16", "png")],
)
def test_decode_png_is_lossless(encoding: str, format_: str, rng) -> None:
    image = make_image(encoding, rng, 17, 23)
    out, decoded = decode_compressed(encode(image, ".png"), format_)
    assert decoded == encoding
    assert out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)


def test_decoded_png_feeds_to_rgb8_with_red_kept_red() -> None:
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 255
    data = np.frombuffer(encode(bgr, ".png"), np.uint8)
    out, encoding = decode_compressed(data, "rgb8; png compressed bgr8")
    assert (to_rgb8(out, encoding) == [255, 0, 0]).all()


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_corrupt(keep: float) -> None:
    data = encode(smooth_bgr(), ".jpg")
    cut = data[: int(len(data) * keep)]
    message = raises_kind("corrupt_compressed", decode_compressed, cut, "jpeg")
    assert f"{len(cut)} bytes" in message and "'jpeg'" in message


def test_jpeg_missing_only_its_end_marker_is_corrupt() -> None:
    data = encode(smooth_bgr(), ".jpg")
    assert data.endswith(b"\xff\xd9")
    message = raises_kind("corrupt_compressed", decode_compressed, data[:-2], "jpeg")
    assert "end-of-image marker" in message


def test_truncated_png_is_corrupt(rng) -> None:
    data = encode(make_image("bgr8", rng), ".png")
    cut = data[: len(data) // 2]
    assert f"{len(cut)} bytes" in raises_kind("corrupt_compressed", decode_compressed, cut, "png")


def test_garbage_is_corrupt(rng) -> None:
    garbage = b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 992, dtype=np.uint8).tobytes()
    message = raises_kind("corrupt_compressed", decode_compressed, garbage, "png")
    assert message == "corrupt compressed image: cv2.imdecode failed on 1000 bytes of format 'png'"
    noise = rng.integers(0, 256, 1000, dtype=np.uint8).tobytes()  # not even a PNG signature
    assert "says png, but the bytes do not start as a png file" in raises_kind(
        "corrupt_compressed", decode_compressed, noise, "png")


def test_format_field_must_match_the_bytes() -> None:
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert "says jpeg" in raises_kind("corrupt_compressed", decode_compressed, png, "jpeg")
    jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert "says png" in raises_kind("corrupt_compressed", decode_compressed, jpg, "rgb8; png compressed bgr8")


def test_trailing_bytes_after_a_jpeg_are_accepted() -> None:
    """Cameras append metadata after the end-of-image marker."""
    rgb = np.full((16, 16, 3), 77, np.uint8)
    jpg = cv2.imencode(".jpg", rgb)[1].tobytes()
    image, encoding = decode_compressed(jpg + bytes(range(64)), "jpeg")
    assert encoding == "bgr8" and image.shape == (16, 16, 3)


def test_huge_images_are_refused_from_their_header() -> None:
    """A small file claiming a huge image is refused before decoding allocates it."""
    big = cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes()
    claims = big[:16] + (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big") + big[24:]
    assert encoded_image_size(np.frombuffer(claims, np.uint8)) == (20000, 20000)
    assert "20000x20000 pixels is larger" in raises_kind("oversized", decode_compressed, claims, "png")
    jpg = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1]
    assert encoded_image_size(jpg) == (30, 40)


@pytest.mark.parametrize("empty", [b"", bytearray(), array.array("B"), np.zeros(0, np.uint8)])
def test_empty_compressed_is_zero_size(empty) -> None:
    assert "0 bytes" in raises_kind("zero_size", decode_compressed, empty, "jpeg")


@pytest.mark.parametrize("format_", ["bmp", "16UC1; compressedDepth png", "", "rgb8; theora"])
def test_unknown_compressed_format(format_: str) -> None:
    data = encode(smooth_bgr(), ".png")
    message = raises_kind("unsupported_encoding", decode_compressed, data, format_)
    assert repr(format_) in message and "jpeg" in message and "png" in message


def test_16_bit_colour_png_is_unsupported() -> None:
    data = encode(np.zeros((4, 4, 3), np.uint16), ".png")
    message = raises_kind("unsupported_encoding", decode_compressed, data, "png")
    assert "3 channel(s) of uint16" in message
