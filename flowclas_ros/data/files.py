"""Image files on disk: decode, read as RGB, write PNG; the one error type for broken data.

Why this exists: training, evaluation and the generators must fail loudly, naming the file, on
broken data rather than silently training or scoring on garbage; decoding goes through numpy so odd
path encodings work too.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flowclas_ros.runtime.images import MAX_DECODED_PIXELS, imdecode_checked, oversized_header

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")

PathLike = str | Path


class DatasetError(ValueError):
    """Broken or missing dataset content; the message names the path and the problem."""



def decode_file(path: PathLike, flags: int) -> np.ndarray:
    """cv2-decode a file (cv2 channel order); via numpy so odd path encodings work too."""
    path = Path(path)
    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DatasetError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    size = oversized_header(buffer)
    if size is not None:
        raise DatasetError(f"image file {path} is {size[1]}x{size[0]} pixels, more than the "
                           f"{MAX_DECODED_PIXELS} decoded at most")
    decoded, warning = imdecode_checked(buffer, flags) if buffer.size else (None, None)
    if decoded is None:
        raise DatasetError(f"cannot decode image file {path} (empty, truncated or not an image)")
    if warning is not None:
        raise DatasetError(f"image file {path} is a damaged JPEG ({warning})")
    return decoded


_TO_CV2_ORDER = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}


def write_png(path: PathLike, array: np.ndarray) -> None:
    """Write an HxW, HxWx3 (RGB) or HxWx4 (RGBA) uint8 array as PNG, creating parent dirs."""
    path = Path(path)
    channels_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in _TO_CV2_ORDER)
    if array.dtype != np.uint8 or not channels_ok:
        raise ValueError(
            f"cannot write {path}: expected uint8 HxW, HxWx3 or HxWx4, got {array.dtype} {array.shape}"
        )
    if array.ndim == 3:
        array = cv2.cvtColor(array, _TO_CV2_ORDER[array.shape[2]])
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded.tofile(path)


def read_image_rgb(path: PathLike) -> np.ndarray:
    """Read any supported image as HxWx3 uint8 RGB (grey replicated, alpha dropped).

    EXIF orientation is ignored on purpose: labels are stored in pixel order,
    and rotating only the image would misalign them.
    """
    bgr = decode_file(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: an 8K frame is 100 MB

