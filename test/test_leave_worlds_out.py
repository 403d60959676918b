"""scripts/leave_worlds_out.py: the choice is made on the development worlds' val only, and the
table's mean / worst rows are those of the per-world rows (evaluate's metrics.json keys)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "leave_worlds_out.py"


@pytest.fixture
def lwo(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("leave_worlds_out", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RUNS", tmp_path / "lwo")
    return module


def _metrics(lwo, world: str, recipe: str, steps: int, split: str, auprc: float, recall: float = 50.0) -> None:
    """A metrics.json with the keys `flowclas-ros evaluate` writes and the table reads."""
    out = lwo.RUNS / world / f"{recipe}_{steps}" / split
    out.mkdir(parents=True)
    sizes = {k: {"pixel_recall": recall + i} for i, k in enumerate(lwo.SIZES)}
    (out / "metrics.json").write_text(json.dumps({
        "auprc": auprc, "fpr95": 100 - auprc, "at_model_threshold": {"tpr": recall, "fpr": 0.1},
        "recall_by_size": sizes}))


def test_choice_is_the_best_mean_val_unless_its_worst_world_falls_behind(lwo):
    for world, a, b in (("gen-1", 90.0, 80.0), ("gen-2", 70.0, 79.0)):
        _metrics(lwo, world, "steady", 200, "val", b)
        _metrics(lwo, world, "peaky", 200, "val", a)
    _metrics(lwo, "gen-3", "peaky", 200, "test", 99.0)  # a held-out world's test: never read by choose
    assert lwo.choose(["gen-1", "gen-2"], ["peaky", "steady"], 200, guard=10.0) == "peaky"  # mean 80 vs 79.5
    assert lwo.choose(["gen-1", "gen-2"], ["peaky", "steady"], 200, guard=5.0) == "steady"  # worst 70 vs 79
    with pytest.raises(SystemExit, match="no recipe"):
        lwo.choose(["gen-3"], ["peaky"], 200)


def test_table_rows_mean_and_worst_over_the_worlds_that_finished(lwo):
    _metrics(lwo, "gen-3", "new-world-accurate", 200, "test", 80.0, recall=40.0)
    _metrics(lwo, "gen-4", "new-world-accurate", 200, "test", 70.0, recall=60.0)
    text = lwo.table(["gen-3", "gen-4", "gen-5"], ["new-world-accurate", "nf-only"], [200], "test")
    lines = text.splitlines()
    assert [ln.split("|")[3].strip() for ln in lines[2:]] == ["gen-3", "gen-4", "**mean of 2**", "**worst**"]
    mean, worst = (ln.split("|") for ln in lines[-2:])
    assert float(mean[4]) == 75.0 and float(worst[4]) == 70.0  # AUPRC
    assert float(mean[5]) == 25.0 and float(worst[5]) == 30.0  # FPR95: worst is the highest
    assert mean[8].split() == ["50", "/", "51", "/", "52", "/", "53"]  # recall by size
    assert worst[8].split() == ["40", "/", "41", "/", "42", "/", "43"]


def test_a_recipe_with_the_zoomed_band_is_its_trained_model_plus_the_band(lwo, tmp_path, monkeypatch):
    """RECIPE+zoom names a known recipe's model given the band; an unknown base is refused; the
    band step needs the base model and says which run to make first."""
    import argparse

    assert lwo.recipe_name("new-world-accurate+zoom") == "new-world-accurate+zoom"
    assert lwo.recipe_name("nf-only") == "nf-only"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown recipe"):
        lwo.recipe_name("fancy+zoom")
    monkeypatch.setattr(lwo, "RUNS", tmp_path)
    with pytest.raises(SystemExit, match="run --recipes new-world"):
        lwo.train_and_score("gen-9", "new-world+zoom", 200, test=True, lock=None)


def test_an_operating_point_recalibrates_the_trained_checkpoint_on_the_worlds_val(lwo, tmp_path, monkeypatch):
    """RECIPE@P is the recipe's checkpoint recalibrated at P % val inlier FPR, then exported (and
    +zoom stacks on it); a bad rate is refused, and a missing checkpoint names the run to make."""
    import argparse

    assert lwo.recipe_name("new-world-accurate@0.3+zoom") == "new-world-accurate@0.3+zoom"
    assert lwo.operating_point("new-world@0.3") == ("new-world", 0.3)
    for bad in ("new-world@", "new-world@abc", "new-world@0", "new-world@100", "fancy@0.3"):
        with pytest.raises(argparse.ArgumentTypeError):
            lwo.recipe_name(bad)
    monkeypatch.setattr(lwo, "RUNS", tmp_path)
    with pytest.raises(SystemExit, match="run --recipes new-world-accurate"):
        lwo.train_and_score("gen-9", "new-world-accurate@0.3", 2000, test=True, lock=None)
    (tmp_path / "gen-9" / "new-world-accurate_2000").mkdir(parents=True)
    (tmp_path / "gen-9" / "new-world-accurate_2000" / "checkpoint.pt").write_bytes(b"")
    units = []
    monkeypatch.setattr(lwo, "run", lambda cmd, lock=None, log=None: units.append(cmd[-1]))
    lwo.train_and_score("gen-9", "new-world-accurate@0.3", 2000, test=True, lock=None)
    steps = units[0].split(" && ")
    assert [s.split()[3] for s in steps] == ["calibrate", "export", "evaluate"]
    assert "calibration.inlier_fpr=0.003" in steps[0] and "new-world-accurate_2000/checkpoint.pt" in steps[0]
    assert "new-world-accurate@0.3_2000/model.onnx" in steps[1]
