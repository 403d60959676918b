"""Convert between sensor_msgs/Image (and CompressedImage) fields and numpy arrays.

Why this exists: the node, the rosbag replay tool and offline code all need
the same, strictly validated conversion, and only the first one has rclpy
(cv_bridge is not always installed and silently accepts broken frames).
Everything here works from the plain message fields, with numpy and cv2 only.

Malformed input never gets "fixed": it raises :class:`ImageError`, whose
``kind`` is a stable short code a caller can count in its diagnostics.
"""

from __future__ import annotations

import array
import os
import sys
import tempfile
import threading
from typing import IO, NamedTuple, Optional, Union

import cv2
import numpy as np

__all__ = [
    "IMAGE_ERROR_KINDS",
    "PUBLISHABLE_ENCODINGS",
    "SUPPORTED_ENCODINGS",
    "ImageError",
    "bytes_per_pixel",
    "decode_compressed",
    "imdecode_checked",
    "image_from_fields",
    "image_msg_fields",
    "to_msg_fields",
    "to_rgb8",
]

ImageBytes = Union[bytes, bytearray, memoryview, array.array, np.ndarray]

IMAGE_ERROR_KINDS: tuple[str, ...] = (
    "zero_size",
    "truncated",
    "oversized",
    "bad_step",
    "unsupported_encoding",
    "non_finite",
    "out_of_range",
    "corrupt_compressed",
    "bad_shape",
)


class ImageError(ValueError):
    """An image that cannot be converted, tagged with a diagnostics counter name.

    ``kind`` is one of :data:`IMAGE_ERROR_KINDS`; the message names the
    problem with the offending numbers so a log line is enough to debug it.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in IMAGE_ERROR_KINDS:
            raise ValueError(f"unknown ImageError kind {kind!r}; expected one of {IMAGE_ERROR_KINDS}")
        super().__init__(message)
        self.kind = kind

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Keep the kind when the error crosses a process boundary (multiprocessing).
        return (type(self), (self.kind, str(self)))


class _Layout(NamedTuple):
    dtype: np.dtype  # element type in native byte order
    channels: int


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

# 8UC1/8UC3/16UC1 alias mono8/bgr8/mono16, as cv_bridge treats them.
_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(_U8, 3),
    "bgr8": _Layout(_U8, 3),
    "rgba8": _Layout(_U8, 4),
    "bgra8": _Layout(_U8, 4),
    "mono8": _Layout(_U8, 1),
    "mono16": _Layout(_U16, 1),
    "8UC1": _Layout(_U8, 1),
    "8UC3": _Layout(_U8, 3),
    "16UC1": _Layout(_U16, 1),
    "32FC1": _Layout(_F32, 1),  # intensity in [0, 1]
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
PUBLISHABLE_ENCODINGS: tuple[str, ...] = ("bgr8", "rgb8", "mono8", "mono16", "16UC1", "32FC1")

# cv2 conversion to RGB, applied after 16-bit/float data is scaled to 8 bits (rgb8 needs none).
_TO_RGB_CODES: dict[str, int] = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "mono16": cv2.COLOR_GRAY2RGB,
    "16UC1": cv2.COLOR_GRAY2RGB,
    "32FC1": cv2.COLOR_GRAY2RGB,
}

_COMPRESSED_CODECS: tuple[str, ...] = ("jpeg", "jpg", "png", "tiff", "tif", "webp")
# (dtype, channels) of a cv2.imdecode result -> encoding.
_DECODED_ENCODINGS: dict[tuple[np.dtype, int], str] = {
    (_U8, 3): "bgr8",
    (_U8, 4): "bgra8",
    (_U8, 1): "mono8",
    (_U16, 1): "mono16",
}
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_JPEG_TAIL_BYTES = 4096  # encoders pad and cameras append metadata after the end-of-image marker
# Largest image decoded from compressed bytes (8K UHD); larger is refused from its header, before
# decoding allocates it: a small PNG can claim 20000x20000 pixels (1.2 GB decoded).
MAX_DECODED_PIXELS = 7680 * 4320
# Magic bytes of each codec, checked against the message's format field.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "jpeg": (_JPEG_SOI,), "jpg": (_JPEG_SOI,), "png": (b"\x89PNG\r\n\x1a\n",),
    "tiff": (b"II*\x00", b"MM\x00*"), "tif": (b"II*\x00", b"MM\x00*"), "webp": (b"RIFF",),
}


def _layout(encoding: str, supported: tuple[str, ...] = SUPPORTED_ENCODINGS) -> _Layout:
    """Look up an encoding, failing with a message that lists the alternatives."""
    if encoding not in supported:
        raise ImageError(
            "unsupported_encoding",
            f"unsupported encoding {encoding!r}; supported: {', '.join(supported)}",
        )
    return _LAYOUTS[encoding]


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel occupies in a message row, needed to validate ``step``."""
    layout = _layout(encoding)
    return layout.dtype.itemsize * layout.channels


def _byte_view(data: ImageBytes) -> np.ndarray:
    """Flat uint8 view of message data without copying (rclpy gives bytes or array.array)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"image data must be a uint8 array, got dtype {data.dtype}")
        return data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def _check_unit_float(image: np.ndarray, encoding: str) -> None:
    """Reject NaN/inf and values outside [0, 1]; a float image is never clipped silently."""
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(image.size - np.count_nonzero(finite))
        row, col = (int(i) for i in np.argwhere(~finite)[0][:2])
        raise ImageError(
            "non_finite",
            f"non-finite {encoding} image: {bad} of {image.size} pixels are NaN or inf "
            f"(first at row {row}, col {col})",
        )
    lo, hi = float(image.min()), float(image.max())
    if lo < 0.0 or hi > 1.0:
        raise ImageError(
            "out_of_range",
            f"out-of-range {encoding} image: values span [{lo:g}, {hi:g}], expected [0, 1]",
        )


def image_from_fields(
    data: ImageBytes,
    height: int,
    width: int,
    encoding: str,
    step: int,
    is_bigendian: bool = False,
    unit_float: bool = True,
) -> np.ndarray:
    """Array view of a sensor_msgs/Image, validated before anything is read.

    Returns HxW for single-channel encodings, HxWxC otherwise, with the
    encoding's dtype. The result is a zero-copy view of ``data`` (row padding
    beyond ``width * bytes_per_pixel`` is sliced off, so it may not be
    contiguous, and it is read-only when ``data`` is ``bytes``), except for
    multi-byte data whose byte order is not native, which is byte-swapped into
    a copy. 32FC1 images must be finite and within [0, 1] (``unit_float``; a depth image in
    metres is read with ``unit_float=False``).
    """
    layout = _layout(encoding)
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"zero-size {encoding} image: height {height}, width {width}")

    itemsize = layout.dtype.itemsize
    bpp = itemsize * layout.channels
    if step < width * bpp:
        raise ImageError(
            "bad_step",
            f"bad step: step {step} < width*bytes_per_pixel = {width * bpp} "
            f"(width {width}, {encoding} has {bpp} bytes per pixel)",
        )
    if step % itemsize:
        raise ImageError(
            "bad_step",
            f"bad step: step {step} is not a multiple of the {itemsize}-byte element size of {encoding}",
        )

    buf = _byte_view(data)
    expected = step * height
    if buf.size != expected:
        kind = "truncated" if buf.size < expected else "oversized"
        raise ImageError(
            kind,
            f"{kind} image: data has {buf.size} bytes, step*height = {expected} "
            f"(step {step}, height {height})",
        )

    wire_dtype = layout.dtype.newbyteorder(">" if is_bigendian else "<")
    rows = buf.view(wire_dtype).reshape(height, step // itemsize)[:, : width * layout.channels]
    image = rows.reshape(height, width, layout.channels) if layout.channels > 1 else rows
    if not wire_dtype.isnative:
        image = image.astype(layout.dtype)
    if layout.dtype == _F32 and unit_float:
        _check_unit_float(image, encoding)
    return image


def _check_array(image: np.ndarray, encoding: str, supported: tuple[str, ...]) -> _Layout:
    """Validate that an array really holds ``encoding`` before converting or publishing it.

    Single-channel encodings accept HxW and HxWx1; byte order is not checked.
    """
    layout = _layout(encoding, supported)
    if image.size == 0:
        raise ImageError("zero_size", f"zero-size {encoding} image: shape {image.shape}")
    if layout.channels == 1:
        shape_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1)
        expected = f"HxW {layout.dtype}"
    else:
        shape_ok = image.ndim == 3 and image.shape[2] == layout.channels
        expected = f"HxWx{layout.channels} {layout.dtype}"
    if not shape_ok or image.dtype.newbyteorder("=") != layout.dtype:
        raise ImageError(
            "bad_shape",
            f"bad shape for {encoding}: expected {expected} array, "
            f"got shape {image.shape} dtype {image.dtype}",
        )
    return layout


def to_rgb8(image: np.ndarray, encoding: str) -> np.ndarray:
    """Contiguous HxWx3 uint8 RGB copy of ``image``, the one input format the model takes.

    Policy: bgr8/8UC3 and bgra8 have their channels swapped; alpha is dropped;
    mono8/8UC1 is replicated to 3 channels; mono16/16UC1 is scaled over its
    full range (round(value / 257), so 65535 -> 255); 32FC1 must be finite and
    in [0, 1] and is scaled by 255 and rounded. Nothing is clipped.
    """
    _check_array(image, encoding, SUPPORTED_ENCODINGS)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if encoding in ("mono16", "16UC1"):
        # (v + 128) // 257 == round(v / 257); integer v never gives a tie.
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif encoding == "32FC1":
        _check_unit_float(image, encoding)
        image = np.rint(image.astype(np.float32) * 255.0).astype(np.uint8)
    code = _TO_RGB_CODES.get(encoding)
    return np.ascontiguousarray(image) if code is None else cv2.cvtColor(image, code)


def _check_codec(format: str) -> str:
    """The codec of a CompressedImage format such as "jpeg" or "rgb8; jpeg compressed bgr8"."""
    words = format.split(";")[-1].split()
    codec = words[0].lower() if words else ""
    if codec not in _COMPRESSED_CODECS:
        raise ImageError(
            "unsupported_encoding",
            f"unsupported compressed format {format!r}; supported codecs: {', '.join(_COMPRESSED_CODECS)}",
        )
    return codec


def encoded_image_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None for other codecs or a
    header that cannot be read (the decoder then has its say)."""
    b = buf[: 1 << 16].tobytes()
    if b.startswith(b"\x89PNG\r\n\x1a\n") and len(b) >= 24 and b[12:16] == b"IHDR":
        return int.from_bytes(b[20:24], "big"), int.from_bytes(b[16:20], "big")
    if b.startswith(_JPEG_SOI):
        i = 2
        while i + 9 < len(b):
            if b[i] != 0xFF:
                return None
            marker = b[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = int.from_bytes(b[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big")
            i += 2 + length
    return None


def _decoded_encoding(image: np.ndarray, format: str) -> str:
    """Name the layout cv2.imdecode produced; anything else is not an input we handle."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = _DECODED_ENCODINGS.get((image.dtype.newbyteorder("="), channels))
    if encoding is None:
        raise ImageError(
            "unsupported_encoding",
            f"unsupported decoded image from format {format!r}: {channels} channel(s) of {image.dtype}; "
            f"supported: {', '.join(_DECODED_ENCODINGS.values())}",
        )
    return encoding


def oversized_header(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) when the encoded image's header claims more than MAX_DECODED_PIXELS,
    else None: the check every decoder of untrusted bytes makes before decoding."""
    size = encoded_image_size(buf) if buf.size else None
    return size if size is not None and size[0] * size[1] > MAX_DECODED_PIXELS else None


# What libjpeg(-turbo) prints for damaged entropy-coded data (its JWRN_* warnings): it then goes
# on and returns a picture, grey or garbled where the data was bad, and cv2 reports success.
_LIBJPEG_CORRUPTION = (b"Corrupt JPEG data", b"Premature end of JPEG file",
                       b"Invalid SOS parameters", b"Inconsistent progression sequence")
_stderr_lock = threading.Lock()
_stderr_sink: Optional[IO[bytes]] = None


def imdecode_checked(buf: np.ndarray, flags: int) -> tuple[Optional[np.ndarray], Optional[str]]:
    """``cv2.imdecode(buf, flags)``, and for a JPEG the corruption warning libjpeg printed (None
    when it printed none): (image or None, warning).

    Why: a JPEG with flipped bytes, or cut and re-terminated with an end-of-image marker, decodes
    "successfully" to a partly grey or garbled frame; the only sign is a libjpeg warning on the
    process's stderr, which OpenCV neither returns nor counts. So a JPEG is decoded with file
    descriptor 2 pointed at a private file, the warning is read back, and whatever else was written
    to stderr meanwhile (another thread's log line) is passed on. JPEG decodes are serialised by a
    lock while stderr is redirected; other codecs decode directly.

    Limit: JPEG has no checksum. Damage that makes libjpeg meet a marker early or late (a cut
    closed with an end marker, bytes erased to 0xFF, most multi-byte damage) is seen; a few bytes
    changed inside the Huffman data often resynchronise and leave no sign at all.
    """
    if buf[:2].tobytes() != _JPEG_SOI:
        return cv2.imdecode(buf, flags), None
    global _stderr_sink
    with _stderr_lock:
        try:
            if _stderr_sink is None:
                _stderr_sink = tempfile.TemporaryFile()
            sink = _stderr_sink
            sink.seek(0)
            sink.truncate()
            saved = os.dup(2)
        except OSError:  # no stderr to redirect: decode unchecked rather than not at all
            return cv2.imdecode(buf, flags), None
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(sink.fileno(), 2)
        try:
            image = cv2.imdecode(buf, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read(1 << 16)
    warning, others = None, []
    for line in text.splitlines(keepends=True):
        if warning is None and line.startswith(_LIBJPEG_CORRUPTION):
            warning = line.decode("ascii", "replace").strip()[:200]
        else:
            others.append(line)
    if others:
        os.write(2, b"".join(others))
    return image, warning


def decode_compressed(data: ImageBytes, format: str) -> tuple[np.ndarray, str]:
    """Decode a sensor_msgs/CompressedImage into (array, encoding).

    The encoding is read from what cv2 decoded (bgr8, bgra8, mono8 or mono16),
    not trusted from ``format``, which only selects an accepted codec. A JPEG
    without its end-of-image marker is rejected even where the cv2 build would
    return a partially decoded frame, and so is one whose decoding makes libjpeg
    warn of corrupt data (:func:`imdecode_checked`).
    """
    codec = _check_codec(format)
    buf = _byte_view(data)
    if buf.size == 0:
        raise ImageError("zero_size", f"zero-size compressed image: format {format!r} with 0 bytes")
    if not any(buf[: len(m)].tobytes() == m for m in _MAGIC[codec]):
        raise ImageError(
            "corrupt_compressed",
            f"corrupt compressed image: format {format!r} says {codec}, but the bytes do not start "
            f"as a {codec} file (first bytes {buf[:8].tobytes()!r})",
        )
    size = oversized_header(buf)
    if size is not None:
        raise ImageError(
            "oversized",
            f"compressed image of {size[1]}x{size[0]} pixels is larger than the "
            f"{MAX_DECODED_PIXELS} pixels decoded at most (refused before decoding)",
        )

    if buf[:2].tobytes() == _JPEG_SOI and _JPEG_EOI not in buf[-_JPEG_TAIL_BYTES:].tobytes():
        raise ImageError(
            "corrupt_compressed",
            f"corrupt compressed image: {buf.size} bytes of format {format!r} are a JPEG "
            "without its end-of-image marker (truncated)",
        )
    image, warning = imdecode_checked(buf, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(
            "corrupt_compressed",
            f"corrupt compressed image: cv2.imdecode failed on {buf.size} bytes of format {format!r}",
        )
    if warning is not None:
        raise ImageError(
            "corrupt_compressed",
            f"corrupt compressed image: {buf.size} bytes of format {format!r} decode with a "
            f"libjpeg warning ({warning}): damaged data, part of the frame would be made up",
        )
    return image, _decoded_encoding(image, format)


def to_msg_fields(image: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """(data, step) for a sensor_msgs/Image to publish, with ``is_bigendian=False``.

    Returns ``bytes`` because assigning an ndarray to an rclpy message field
    costs ~50 ms per frame (element-wise conversion) while bytes take ~0.06 ms.
    Supports bgr8, rgb8, mono8, mono16, 16UC1 (depth in mm) and 32FC1; multi-byte data is written
    little-endian. Values are published as they are (32FC1 is not range-checked).
    """
    layout = _check_array(image, encoding, PUBLISHABLE_ENCODINGS)
    width = image.shape[1]
    data = np.ascontiguousarray(image, dtype=layout.dtype.newbyteorder("<")).tobytes()
    return data, width * layout.dtype.itemsize * layout.channels


def image_msg_fields(image: np.ndarray, encoding: str) -> dict[str, object]:
    """Every sensor_msgs/Image field but the header, for any message class that takes them as
    keyword arguments (rclpy's for publishing, rosbags' for writing bags): the one place that
    knows how an array becomes an Image. ``data`` is ``bytes`` (see :func:`to_msg_fields`)."""
    data, step = to_msg_fields(image, encoding)
    return {"height": int(image.shape[0]), "width": int(image.shape[1]), "encoding": encoding,
            "is_bigendian": 0, "step": step, "data": data}
