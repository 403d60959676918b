"""The README's main command, `flowclas-ros demo`: the real node over DDS on rendered frames."""
from __future__ import annotations

import cv2
import pytest

from flowclas_ros.cli import main as cli_main

pytest.importorskip("pybullet", reason="the demo renders PyBullet frames (sim extra)")


def test_demo_runs_the_live_node_and_writes_a_montage(trained, tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--model", str(trained["onnx"]), "--out", str(out), "--frames", "3"]) == 0
    text = capsys.readouterr().out
    assert "3/3 frames answered" in text and "latency p50" in text
    assert "ground truth" in text and "node diagnostics: backend onnxruntime" in text
    montage = cv2.imread(str(out / "overlay_montage.png"))
    assert montage is not None and montage.shape[0] >= 240


def test_demo_offline_mode_needs_no_ros(trained, tmp_path, capsys):
    assert cli_main(["demo", "--offline", "--model", str(trained["onnx"]), "--out", str(tmp_path),
                     "--frames", "2"]) == 0
    assert "obstacles" in capsys.readouterr().out
    assert (tmp_path / "overlay_montage.png").is_file()
