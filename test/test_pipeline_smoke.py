"""CI smoke test of the whole offline pipeline through the CLI, on the real PyBullet benchmark:
sim (train, val, OE bank) -> train -> export --check -> evaluate --json."""
from __future__ import annotations

import json

import pytest
from conftest import tiny_config, write_config

from flowclas_ros.cli import main as cli_main

pytest.importorskip("pybullet", reason="the sim extra (pybullet) is part of `make test`")


def test_generate_train_export_evaluate(tmp_path, capsys):
    data = tmp_path / "sim"
    for split, n in (("train", 6), ("val", 3), ("oe", 12)):
        out = data / ("oe_bank" if split == "oe" else split)
        assert cli_main(["sim", "--split", split, "-n", str(n), "--out", str(out), "--seed", "3"]) == 0
    cfg = tiny_config(data, model={"input_size": [96, 128]},
                      train={"max_steps": 6, "batch_size": 2, "checkpoint_every": 3})
    cfg["calibration"]["max_frames"] = 3
    cfg_path = write_config(tmp_path / "sim.yaml", cfg)
    assert cli_main(["train", "--config", str(cfg_path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    onnx_path = tmp_path / "m.onnx"
    assert cli_main(["export", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(onnx_path),
                     "--check", "--check-frames", "2"]) == 0
    assert "-> OK" in capsys.readouterr().out
    assert cli_main(["evaluate", "--data", str(data / "val"), "--model", str(onnx_path),
                     "--out", str(tmp_path / "report"), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 3
    for key in ("auprc", "fpr95", "auroc", "mean_f1", "siou", "ppv", "ms_per_frame"):
        assert key in report
    assert 0.0 <= report["auroc"] <= 100.0 and report["ms_per_frame"] > 0
    assert (tmp_path / "report" / "metrics.json").is_file()
