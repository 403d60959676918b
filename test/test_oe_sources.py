"""Tests for the OE-source plumbing (config `outlier_exposure.sources`, TrainingFrames' source
draw, train.py's flow-negative copies, the model card line) and the image-level metrics
(image score, exact rank AUROC against scikit-learn, the evaluator's `image_auroc` on an MVTec
tree)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_config, write_config
from sklearn.metrics import roc_auc_score

from flowclas_ros.config import ConfigError, config_from_dict, load_config
from flowclas_ros.eval.image_metrics import ImageMetrics, image_score, rank_auroc


def _cfg(toy_world: Path, **oe) -> dict:
    c = tiny_config(toy_world)
    c["outlier_exposure"].update(oe)
    return c


# ------------------------------------------------------------------ config


def test_sources_default_to_cutouts_and_keep_old_hashes(toy_world: Path) -> None:
    old = tiny_config(toy_world)
    cfg = config_from_dict(old)
    assert cfg.outlier_exposure.source_weights() == {"cutouts": 1.0}
    explicit = config_from_dict(_cfg(toy_world, sources={"cutouts": 1.0, "procedural": 0.0}))
    assert explicit.sha256() == cfg.sha256()  # defaults spelled out: same hash, runs stay resumable
    mixed = config_from_dict(_cfg(toy_world, sources={"cutouts": 1.0, "procedural": 1.0}))
    assert mixed.sha256() != cfg.sha256()
    nf_only = _cfg(toy_world, enabled=False)
    nf_only["loss"]["contrastive_weight"] = 0.0
    assert config_from_dict(nf_only).outlier_exposure.source_weights() == {}


@pytest.mark.parametrize("oe,key", [
    ({"sources": {"cutouts": -1.0}}, "outlier_exposure.sources.cutouts"),
    ({"sources": {"cutouts": 0.0}}, "outlier_exposure.sources"),
    ({"sources": {"cutout": 1.0}}, "outlier_exposure.sources.cutout"),
    ({"bank": None}, "outlier_exposure.bank"),
    ({"procedural": {"coverage": [0.0, 0.5]}}, "outlier_exposure.procedural.coverage"),
    ({"procedural": {"fills": {"texture": 0, "colour": 0, "geometry": 0}}}, "outlier_exposure.procedural.fills"),
    ({"procedural": {"min_change": 0}}, "outlier_exposure.procedural.min_change"),
    ({"flow_negatives": {"tau": [1.0, 2.0]}}, "outlier_exposure.flow_negatives.tau"),
    ({"flow_negatives": {"context": "keep"}}, "outlier_exposure.flow_negatives.context"),
    ({"flow_negatives": {"cells": [3, 2]}}, "outlier_exposure.flow_negatives.cells"),
])
def test_bad_source_settings_name_the_key(toy_world: Path, oe: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(_cfg(toy_world, **oe))


def test_no_bank_needed_without_cutouts(toy_world: Path) -> None:
    cfg = config_from_dict(_cfg(toy_world, bank=None, sources={"cutouts": 0.0, "procedural": 1.0,
                                                                "flow_negatives": 1.0}))
    assert cfg.outlier_exposure.source_weights() == {"procedural": 1.0, "flow_negatives": 1.0}


# ------------------------------------------------------------------ frames


def test_cutouts_only_draws_the_original_stream(toy_world: Path) -> None:
    """A cut-outs-only config gives bit-identical batches to the pre-sources code path."""
    from flowclas_ros.data.outliers.cutouts import paste_outliers
    from flowclas_ros.training.batches import TrainingFrames

    frames = TrainingFrames(config_from_dict(tiny_config(toy_world)))
    rng_a, rng_b = frames.rng(3), frames.rng(3)
    for index in range(6):
        rgb, label = frames.read(index)
        want = paste_outliers(rgb, label, frames.bank, frames.paste_cfg, rng_a)
        got = frames.outlier_exposure(rgb, label, rng_b)
        np.testing.assert_array_equal(want[0], got[0])
        assert got[2] == ("cutouts" if want[2] else "none")


def test_sources_are_drawn_by_weight(toy_world: Path) -> None:
    from flowclas_ros.training.batches import TrainingFrames

    cfg = config_from_dict(_cfg(toy_world, probability=0.8,
                                sources={"cutouts": 1.0, "procedural": 2.0, "flow_negatives": 1.0}))
    frames = TrainingFrames(cfg)
    counts: dict[str, int] = {}
    for step in range(40):
        for f in frames.batch(step):
            counts[f.source] = counts.get(f.source, 0) + 1
            assert f.modified == (f.source in ("cutouts", "procedural"))
            if f.source == "flow_negatives" or f.source == "none":
                assert not (f.label == 1).any()  # toy train frames are inlier-only
            else:
                assert (f.label == 1).any()
    n = sum(counts.values())  # 160 frames
    assert abs(counts["none"] / n - 0.2) < 0.08
    assert abs(counts["procedural"] / n - 0.4) < 0.1
    assert abs(counts["cutouts"] / n - 0.2) < 0.08 and abs(counts["flow_negatives"] / n - 0.2) < 0.08
    b1, b2 = frames.batch(5), frames.batch(5)  # still a pure function of (seed, step, rank)
    assert [f.source for f in b1] == [f.source for f in b2]
    np.testing.assert_array_equal(np.stack([f.image for f in b1]), np.stack([f.image for f in b2]))


# ------------------------------------------------------------------ training


@pytest.mark.parametrize("nll_margin", [0.0, 2.0])
def test_training_with_procedural_and_flow_negatives(toy_world: Path, tmp_path: Path,
                                                     nll_margin: float) -> None:
    from flowclas_ros.training.loop import train

    c = _cfg(toy_world, bank=None, probability=1.0,
             sources={"cutouts": 0.0, "procedural": 1.0, "flow_negatives": 1.0},
             flow_negatives={"nll_margin": nll_margin})
    c["train"].update(max_steps=6, log_every=1, checkpoint_every=100)
    cfg = load_config(write_config(tmp_path / "c.yaml", c))
    ckpt = train(cfg, tmp_path / "out", progress=False)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(np.isfinite(r["loss"]) for r in log)
    assert sum(r["flow_negatives"] for r in log) > 0  # negative copies were appended
    assert any(r["con"] > 0 for r in log)  # and fed the contrastive term
    weight = c["loss"]["contrastive_weight"]
    hinge = [r["loss"] - (r["ml"] + weight * r["con"]) for r in log]
    if nll_margin > 0:  # the NLL hinge on negative cells adds to the total
        assert max(hinge) > 1e-3, hinge
    else:
        assert max(abs(h) for h in hinge) < 1e-4, hinge
    from flowclas_ros.deploy.model_card import describe_oe
    from flowclas_ros.training.checkpoint import checkpoint_config, load_checkpoint

    line = describe_oe(checkpoint_config(load_checkpoint(ckpt)).outlier_exposure)
    assert "procedural" in line and "flow-sampled" in line and "cut-outs" not in line


# ------------------------------------------------------------------ image metrics


def test_rank_auroc_matches_sklearn_exactly() -> None:
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(2, 300))
        y = rng.random(n) < rng.uniform(0.1, 0.9)
        if y.all() or not y.any():
            y[0] = not y[0]
        s = rng.integers(0, 6, n).astype(float) if trial % 2 else rng.normal(size=n) + y  # ties, no ties
        assert rank_auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(rank_auroc([1.0, 2.0], [True, True]))
    assert rank_auroc([0.1, 0.9, 0.5, 0.5], [False, True, True, False]) == pytest.approx(0.875)


def test_image_score_max_topk_and_void() -> None:
    s = np.arange(100, dtype=np.float32).reshape(10, 10)
    lab = np.zeros((10, 10), np.uint8)
    lab[9, 9] = 255  # the 99 is void
    assert image_score(s, lab) == 98.0
    assert image_score(s, lab, 0.05) == pytest.approx(np.mean([94, 95, 96, 97, 98]))  # ceil(0.05*99)=5
    assert image_score(s, None, 1.0) == pytest.approx(49.5)
    assert np.isnan(image_score(s, np.full((10, 10), 255, np.uint8)))
    m = ImageMetrics(top_k=0.1)
    m.update(s, lab)
    m.update(s * 0 + 1, np.ones_like(lab))
    assert m.update(s, np.full((10, 10), 255, np.uint8)) is None
    r = m.result()
    assert (r["images"], r["anomalous"], r["normal"], r["skipped"]) == (2, 1, 1, 1)
    assert r["auroc_max"] == 0.0  # the anomalous image scores lower here


def _mvtec_tree(root: Path, rng: np.random.Generator) -> None:
    """bottle/test/{good,scratch} + ground_truth: 4 good, 4 defect images (a bright square)."""
    from flowclas_ros.sim.toy import render_inlier_scene

    for sub in ("test/good", "test/scratch", "ground_truth/scratch", "train/good"):
        (root / "bottle" / sub).mkdir(parents=True)
    for i in range(4):
        img = render_inlier_scene(rng, (64, 80))
        cv2.imwrite(str(root / "bottle/test/good" / f"{i:03d}.png"), img[..., ::-1])
        cv2.imwrite(str(root / "bottle/train/good" / f"{i:03d}.png"), img[..., ::-1])
        bad = render_inlier_scene(rng, (64, 80))
        mask = np.zeros((64, 80), np.uint8)
        mask[20:40, 30:50] = 255
        bad[mask > 0] = (250, 20, 220)
        cv2.imwrite(str(root / "bottle/test/scratch" / f"{i:03d}.png"), bad[..., ::-1])
        cv2.imwrite(str(root / "bottle/ground_truth/scratch" / f"{i:03d}_mask.png"), mask)


def test_evaluator_reports_image_auroc_on_mvtec(trained: dict, tmp_path: Path, capsys) -> None:
    from flowclas_ros.eval.evaluate import evaluate
    from flowclas_ros.eval.report import format_summary

    _mvtec_tree(tmp_path, np.random.default_rng(0))
    r = evaluate(tmp_path, trained["onnx"], layout="mvtec", progress=False,
                 layout_options={"category": "bottle", "split": "test"}, image_top_k=0.02)
    im = r["image"]
    assert (im["images"], im["anomalous"], im["normal"]) == (8, 4, 4)
    assert r["image_auroc"] == im["auroc_max"] and 0.0 <= r["image_auroc"] <= 100.0
    assert im["top_k"] == 0.02 and np.isfinite(im["auroc_topk"])
    assert "image:" in format_summary(r)
    topk = evaluate(tmp_path, trained["onnx"], layout="mvtec", progress=False, image_score="topk",
                    layout_options={"category": "bottle", "split": "test"})
    assert topk["image_auroc"] == topk["image"]["auroc_topk"]
    from flowclas_ros.cli import main

    assert main(["evaluate", "--data", str(tmp_path), "--model", str(trained["onnx"]), "--layout",
                 "mvtec", "--layout-opt", "category=bottle", "--layout-opt", "split=test",
                 "--image-score", "topk", "--json", "--quiet"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["image_auroc"] == pytest.approx(topk["image_auroc"]) and cli["image"]["score"] == "topk"
    assert main(["evaluate", "--data", str(tmp_path), "--model", str(trained["onnx"]), "--layout",
                 "mvtec", "--layout-opt", "category", "--quiet"]) == 2  # a one-line user error
    # all frames anomalous (the toy test split): undefined, not an error
    r2 = evaluate(Path(trained["config"].data.val.root).parent / "test", trained["onnx"], progress=False)
    assert np.isnan(r2["image_auroc"]) and r2["image"]["normal"] == 0 and r2["image"]["anomalous"] > 0


def test_flow_negatives_from_a_separate_generator_flow(toy_world: Path, tmp_path: Path,
                                                       trained: dict) -> None:
    """NFlowJS keeps the generator flow apart: a trained checkpoint's head draws the negatives and
    stays frozen while the new model trains on them."""
    import torch

    from flowclas_ros.training.checkpoint import load_checkpoint
    from flowclas_ros.training.loop import train

    c = _cfg(toy_world, bank=None, probability=1.0,
             sources={"cutouts": 0.0, "procedural": 0.0, "flow_negatives": 1.0},
             flow_negatives={"generator": str(trained["checkpoint"])})
    c["train"].update(max_steps=4, log_every=1, checkpoint_every=100)
    cfg = load_config(write_config(tmp_path / "c.yaml", c))
    before = {k: v.clone() for k, v in load_checkpoint(trained["checkpoint"])["head"].items()}
    train(cfg, tmp_path / "out", progress=False)
    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["flow_negatives"] for r in log) > 0 and any(r["con"] > 0 for r in log)
    after = load_checkpoint(trained["checkpoint"])["head"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    from flowclas_ros.deploy.model_card import describe_oe

    assert f"drawn by the frozen flow of `{trained['checkpoint']}`" in describe_oe(cfg.outlier_exposure)
    # a missing generator, or one trained on other features, is refused naming the key
    for generator, backbone in ((str(tmp_path / "missing.pt"), None),
                                (str(trained["checkpoint"]), {"taps": [8, 16], "feature_stride": 16})):
        bad = json.loads(json.dumps(c))
        bad["outlier_exposure"]["flow_negatives"]["generator"] = generator
        if backbone:
            bad["model"]["backbone"].update(backbone)
        bad_cfg = load_config(write_config(tmp_path / "bad.yaml", bad))
        with pytest.raises(ConfigError, match="outlier_exposure.flow_negatives.generator"):
            train(bad_cfg, tmp_path / "bad_out", progress=False)
