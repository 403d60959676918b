"""The real trainer: checkpoints, exact resume, calibration, CLI errors, DDP on 2 CPU processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config, write_config

from flowclas_ros.cli import main as cli_main
from flowclas_ros.config import ConfigError, load_config
from flowclas_ros.training.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
from flowclas_ros.training.loop import train


def test_training_writes_a_safe_calibrated_checkpoint(trained):
    path = trained["checkpoint"]
    raw = torch.load(str(path), map_location="cpu", weights_only=True)  # no unpickling needed
    assert raw["format"] == CHECKPOINT_FORMAT
    assert raw["step"] == trained["config"].train.max_steps
    assert raw["config_sha256"] == trained["config"].sha256()
    cal = raw["calibration"]
    assert cal["threshold"] == 1.0 and cal["score_scale"] > 0 and cal["frames"] == 8
    assert "optimizer" in raw and "scheduler" in raw
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]  # atomic writes leave none
    log = [json.loads(l) for l in (path.parent / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 9, 12]
    assert all(r["con"] > 0 for r in log)  # OE pasted anomalies -> contrastive term active


def test_resume_continues_exactly(toy_world, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(toy_world)))
    straight = load_checkpoint(train(cfg, tmp_path / "straight", progress=False))
    partial = train(cfg, tmp_path / "resumed", stop_at=5, progress=False)
    assert load_checkpoint(partial)["step"] == 5
    assert load_checkpoint(partial)["calibration"] is None
    resumed = load_checkpoint(train(cfg, tmp_path / "resumed", resume=True, progress=False))
    assert resumed["step"] == straight["step"] == 12
    for key, value in straight["head"].items():
        assert torch.equal(value, resumed["head"][key]), key
    assert resumed["calibration"] == straight["calibration"]


def test_resume_refuses_a_different_config(toy_world, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(toy_world)))
    train(cfg, tmp_path / "run", stop_at=2, progress=False)
    other = load_config(write_config(tmp_path / "c.yaml", tiny_config(toy_world)),
                        ["train.lr=0.01"])
    with pytest.raises(ConfigError, match="config differs"):
        train(other, tmp_path / "run", resume=True, progress=False)


def test_nf_only_ablation_trains_from_the_same_config(toy_world, tmp_path):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(toy_world)),
                      ["loss.contrastive_weight=0", "outlier_exposure.enabled=false",
                       "train.max_steps=4"])
    ckpt = load_checkpoint(train(cfg, tmp_path / "nf", progress=False))
    log = [json.loads(l) for l in (tmp_path / "nf" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["con"] == 0.0 for r in log)
    assert ckpt["calibration"] is not None


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a flowclas_ros checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_cli_reports_bad_config_key_in_one_line(toy_world, tmp_path, capsys):
    cfg = tiny_config(toy_world)
    cfg["train"]["learning_rate"] = 0.1
    path = write_config(tmp_path / "c.yaml", cfg)
    assert cli_main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.learning_rate'" in err and "Traceback" not in err


def test_cli_train_max_steps(toy_world, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config(toy_world))
    assert cli_main(["train", "--config", str(path), "--out", str(tmp_path / "o"),
                     "--max-steps", "3", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "o" / "checkpoint.pt")["step"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_gloo(toy_world, tmp_path):
    """torchrun + DistributedDataParallel on the gloo backend, 2 processes, a few steps."""
    path = write_config(tmp_path / "c.yaml", tiny_config(toy_world, train={"max_steps": 4}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "flowclas_ros.cli", "train", "--config", str(path), "--out", str(tmp_path / "ddp"),
           "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 ranks hold identical weights" in proc.stderr
    ckpt = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    assert ckpt["calibration"] is not None
