"""detect's memory is bounded: images above MAX_DECODED_PIXELS are refused from their header
(before decoding), and the post-processing and overlay of a frame at the limit make no
frame-sized float copies (obstacle statistics reduced under a mask, the overlay blended in bands)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from flowclas_ros import cli
from flowclas_ros.runtime.images import MAX_DECODED_PIXELS
from flowclas_ros.runtime.processing import threshold_components
from flowclas_ros.runtime.visualize import render_overlay


def test_a_frame_above_the_limit_is_refused_from_its_header(tmp_path, capsys):
    import cv2

    assert MAX_DECODED_PIXELS == 7680 * 4320
    big = np.zeros((6000 // 8, 8000 // 8, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", big)
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")  # claim 8000x6000 in the header: refused before decoding
    data[sof + 5:sof + 9] = (6000).to_bytes(2, "big") + (8000).to_bytes(2, "big")
    path = tmp_path / "huge.jpg"
    path.write_bytes(bytes(data))
    assert cli.main(["detect", str(path)]) == 2
    assert "8000x6000 pixels, more than the 33177600 decoded at most" in capsys.readouterr().err


@pytest.mark.parametrize("dense", [False, True])
def test_postprocessing_and_overlay_make_no_frame_sized_float_copies(dense):
    h, w = 4800, 800  # tall: the overlay blends bands of 256 rows
    rng = np.random.default_rng(0)
    heat = (rng.random((h, w), dtype=np.float32) * (3.0 if dense else 0.6)).astype(np.float32)
    heat[100:400, 200:900] = 2.0  # one big obstacle
    rgb = np.zeros((h, w, 3), np.uint8)
    tracemalloc.start()
    mask, obstacles = threshold_components(heat, 1.0, 50)
    overlay = render_overlay(rgb, heat, mask, 1.0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert overlay.shape == rgb.shape and mask.max() == 255
    big = max(obstacles, key=lambda o: o.area)
    assert big.area >= 300 * 600 and big.peak_score == pytest.approx(float(heat[mask > 0].max()))
    # the old full-frame blend took ~40 bytes a pixel (float32 copies of the frame and colours)
    assert peak < 12 * h * w, peak / (h * w)
