"""Training that cannot give a usable model stops in one line and writes no model; what the
threshold could not account for (no held-out val, unlabelled frames) is said in the log and in
the model's threshold rule; a missing cut-out bank is refused before any bag is extracted."""
from __future__ import annotations

import logging

import numpy as np
from conftest import tiny_config, write_config
from test_bags import toy_bag, toy_frames  # noqa: F401 - toy_frames is a fixture

from flowclas_ros import cli
from flowclas_ros.training import calibration
from flowclas_ros.training.calibration import calibration_caveats
from flowclas_ros.training.checkpoint import load_checkpoint


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_exploding_learning_rate_stops_training_without_a_model(toy_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", tiny_config(toy_world, train={
        "lr": 1e30, "max_steps": 8, "checkpoint_every": 100, "schedule": "constant"}))
    code, err = run_cli(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                                 "--quiet"])
    assert code == 2 and err.startswith("flowclas-ros: error: training diverged: non-finite")
    assert "no model written" in err or "no checkpoint written" in err
    assert len(err.splitlines()) == 1 and "lower train.lr" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_infinite_learning_rate_is_a_config_error(toy_world, tmp_path, capsys):
    cfg = tiny_config(toy_world)
    path = tmp_path / "c.yaml"
    path.write_text(write_config(tmp_path / "base.yaml", cfg).read_text().replace(
        "lr: 0.001", "lr: .inf"))
    code, err = run_cli(capsys, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert code == 2 and "train.lr: must be a finite number" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_huge_input_size_is_refused_in_one_line(toy_world, tmp_path, capsys):
    """model.input_size [100000, 100000] used to end in an OpenCV out-of-memory traceback."""
    cfg = write_config(tmp_path / "c.yaml", tiny_config(toy_world))
    code, err = run_cli(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                                 "--set", "model.input_size=[100000, 100000]", "--quiet"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "model.input_size: must be [height, width], each 32..4096" in err, err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_non_finite_calibration_writes_no_model(toy_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(calibration, "normalisation_from_inliers",
                        lambda scores, fpr: (float("nan"), float("nan")))
    cfg = write_config(tmp_path / "c.yaml", tiny_config(toy_world, train={"max_steps": 2}))
    code, err = run_cli(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                                 "--quiet"])
    assert code == 2 and "calibration: non-finite score normalisation" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_missing_cutout_bank_is_refused_before_the_bag_is_extracted(toy_frames, tmp_path,  # noqa: F811
                                                                   capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bag = toy_bag(tmp_path / "log", toy_frames[:4])
    for bank in (tmp_path / "no_bank", tmp_path):  # missing; a directory without cut-outs
        code, err = run_cli(capsys, ["train", "--bag", str(bag), "--bank", str(bank),
                                     "--out", str(tmp_path / "run"), "--quiet"])
        assert code == 2 and len(err.splitlines()) == 1
        assert f"cut-out directory {bank} " in err
        assert not (tmp_path / "xdg" / "flowclas_ros" / "bags").exists()  # nothing extracted


def test_calibration_without_held_out_labels_says_so(toy_world, tmp_path, caplog):
    from flowclas_ros.config import config_from_dict
    from flowclas_ros.training.loop import train

    cfg = tiny_config(toy_world, train={"max_steps": 2})
    cfg["data"].pop("val")
    with caplog.at_level(logging.WARNING, logger="flowclas_ros.train"):
        ckpt = load_checkpoint(train(config_from_dict(cfg), tmp_path / "run", progress=False))
    rule = ckpt["calibration"]["threshold_rule"]
    assert "set on TRAINING frames (no data.val configured)" in rule
    assert "TRAINING frames" in caplog.text
    assert np.isfinite(ckpt["calibration"]["score_scale"])


def test_calibration_caveats_wording():
    assert calibration_caveats(False, 8, 0, 3) == []
    assert calibration_caveats(True, 8, 0, 3)[0].startswith("set on TRAINING frames")
    (only,) = calibration_caveats(False, 8, 8, 0)  # a bag as val: unlabelled, taken as inlier
    assert "8 of 8 calibration frames have no labels and were taken as all inlier" in only
    (only,) = calibration_caveats(False, 8, 0, 0)
    assert "no anomaly pixel in the labelled calibration frames" in only
