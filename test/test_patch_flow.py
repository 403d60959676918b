"""The `flow_patches` OE source (issue 15): the patch generator (model/outliers/patch_generator_flow.py), its training,
border sampling and cache (training/outliers/flow_patch_bank.py), the paste (data/outliers/flow_patch_pasting.py), the
config keys, TrainingFrames and `train --oe`. Tiny generator settings keep it to seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from flowclas_ros.config import ConfigError, config_from_dict
from flowclas_ros.data.files import DatasetError
from flowclas_ros.data.outliers.flow_patch_pasting import (
    SHAPE_KINDS,
    FlowPatchConfig,
    PatchBank,
    paste_flow_patches,
    shape_mask,
)
from flowclas_ros.model.outliers.patch_generator_flow import PatchFlow, squeeze, unsqueeze

# A generator small enough for the test suite; the toy frames are 64x80.
TINY_GENERATOR = {"levels": 2, "steps": 2, "hidden_channels": 16, "crop": 16, "frame_scales": [1, 2],
                  "iterations": 80, "batch_size": 16, "lr": 2e-3, "sizes": [16, 32], "bank_size": 24}


def _cfg(toy_world: Path, cache: Path, train_root: str = "train", **fp) -> dict:
    c = tiny_config(toy_world)
    c["data"]["train"] = [{"root": str(toy_world / train_root)}]
    c["outlier_exposure"].update(bank=None, probability=1.0,
                                 sources={"cutouts": 0.0, "flow_patches": 1.0},
                                 flow_patches={**TINY_GENERATOR, "cache_dir": str(cache), **fp})
    return c


@pytest.fixture(scope="module")
def generated(toy_world, tmp_path_factory) -> dict:
    """The bank of the toy world's 24 training frames, generated once (cache in a tmp dir)."""
    from flowclas_ros.training.outliers.flow_patch_bank import flow_patch_bank

    cache = tmp_path_factory.mktemp("patch_cache")
    cfg = config_from_dict(_cfg(toy_world, cache))
    bank = flow_patch_bank(cfg)
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    return {"cfg": cfg, "bank": bank, "cache": cache, "folder": folder}


# ------------------------------------------------------------------ the flow


def test_patch_flow_is_exactly_invertible_at_any_patch_size() -> None:
    torch.manual_seed(0)
    flow = PatchFlow(levels=2, steps=2, hidden=8)
    x = torch.rand(3, 3, 16, 24) - 0.5
    assert torch.equal(unsqueeze(squeeze(x)), x)
    flow.train()
    flow.log_prob(x)  # ActNorm init
    flow.eval()
    for p in flow.parameters():  # the zero-initialised nets start as the identity: perturb them
        p.data += 0.05 * torch.randn_like(p)
    with torch.no_grad():
        for size in ((16, 24), (32, 32)):
            x = torch.rand(2, 3, *size) - 0.5
            eps, logp = flow.encode(x)
            assert [e.shape for e in eps] == [torch.Size(s) for s in flow.latent_shapes(2, size)]
            assert torch.allclose(flow.decode(eps), x, atol=1e-4) and torch.isfinite(logp).all()
    with pytest.raises(ValueError, match="multiples of 4"):
        flow.log_prob(torch.zeros(1, 3, 18, 16))


def test_likelihood_decreases_and_samples_have_any_size(generated) -> None:
    meta = json.loads((generated["folder"] / "generator.json").read_text())
    history = meta["bpd_history"]  # bits/dim every 10 iterations on real toy-frame crops
    assert np.mean(history[-2:]) < history[0] - 1.0, history
    saved = torch.load(generated["folder"] / "generator.pt", weights_only=True)
    flow = PatchFlow(2, 2, 16)
    flow.load_state_dict(saved["state_dict"])
    flow.eval()
    g = torch.Generator().manual_seed(0)
    for side in (16, 128):  # one fully convolutional model samples small and large patches
        x = flow.sample(3, (side, side), (1.0, 1.3), g)
        assert x.shape == (3, 3, side, side) and x.dtype == torch.uint8
        assert int(x.min()) >= 0 and int(x.max()) <= 255 and x.float().std() > 0
        assert torch.isfinite(flow.bits_per_dim(x.float(), g)).all()


def test_border_samples_are_less_likely_than_held_out_inlier_patches(generated) -> None:
    info = json.loads(next(generated["folder"].glob("bank-*.json")).read_text())
    assert [s["side"] for s in info["sizes"]] == [16, 32]
    for s in info["sizes"]:
        assert s["bank_bpd_mean"] > s["inlier_bpd_mean"], s  # off the inlier set
        assert s["band"][0] > s["inlier_bpd_mean"]
    bank: PatchBank = generated["bank"]
    assert sorted(bank.patches) == [16, 32] and len(bank) == 24
    assert all(a.dtype == np.uint8 and a.shape[1:] == (s, s, 3) for s, a in bank.patches.items())


def test_sample_border_keeps_only_the_band() -> None:
    from flowclas_ros.training.outliers.flow_patch_bank import bits_per_dim, sample_border

    torch.manual_seed(0)
    flow = PatchFlow(levels=2, steps=1, hidden=8)
    flow.train()
    flow.log_prob(torch.rand(8, 3, 16, 16) - 0.5)
    flow.eval()
    g = torch.Generator().manual_seed(1)
    probe = bits_per_dim(flow, flow.sample(64, (16, 16), 1.2, g).permute(0, 2, 3, 1).numpy(), g)
    band = (float(np.quantile(probe, 0.3)), float(np.quantile(probe, 0.7)))
    patches, stats = sample_border(flow, 16, 10, band, (1.0, 1.4), g)
    assert patches.shape == (10, 16, 16, 3) and stats["filled_nearest"] == 0
    assert 0.02 < stats["acceptance"] < 0.9  # some draws fall outside the band and are dropped
    again = bits_per_dim(flow, patches, g)  # a fresh dequantisation draw: within a little of the band
    assert np.all(again > band[0] - 0.05) and np.all(again < band[1] + 0.05)


# ------------------------------------------------------------------ cache and errors


def test_second_call_reads_the_cache(generated, monkeypatch) -> None:
    import flowclas_ros.training.outliers.flow_patch_bank as pn

    def fail(*a, **k):
        raise AssertionError("the generator was trained again")

    monkeypatch.setattr(pn, "train_patch_flow", fail)
    monkeypatch.setattr(pn, "crop_pools", fail)
    again = pn.flow_patch_bank(generated["cfg"])
    for side, patches in generated["bank"].patches.items():
        np.testing.assert_array_equal(again.patches[side], patches)


def test_new_sampling_settings_reuse_the_generator(generated, monkeypatch) -> None:
    import dataclasses

    import flowclas_ros.training.outliers.flow_patch_bank as pn

    cfg = generated["cfg"]
    fp = dataclasses.replace(cfg.outlier_exposure.flow_patches, border_width=2.0, bank_size=4)
    other = dataclasses.replace(cfg, outlier_exposure=dataclasses.replace(cfg.outlier_exposure, flow_patches=fp))
    monkeypatch.setattr(pn, "train_patch_flow", lambda *a, **k: pytest.fail("generator retrained"))
    assert len(pn.flow_patch_bank(other)) == 4
    assert pn.cache_keys(other, pn.training_samples(other))[0] == generated["folder"].name


def test_too_few_frames_is_one_clear_error(toy_world, tmp_path) -> None:
    from flowclas_ros.training.outliers.flow_patch_bank import flow_patch_bank

    cfg = config_from_dict(_cfg(toy_world, tmp_path, train_root="val"))  # 8 frames
    with pytest.raises(DatasetError, match="needs at least 16 training frames, data.train has 8"):
        flow_patch_bank(cfg)


@pytest.mark.parametrize("fp,key", [
    ({"sizes": [18]}, "outlier_exposure.flow_patches.sizes"),
    ({"temperature": [1.3, 1.0]}, "outlier_exposure.flow_patches.temperature"),
    ({"shapes": {"ellipse": 0, "polygon": 0, "blob": 0}}, "outlier_exposure.flow_patches.shapes"),
    ({"border_quantile": 1.0}, "outlier_exposure.flow_patches.border_quantile"),
    ({"crop": 18}, "outlier_exposure.flow_patches.crop"),
    ({"scale": [0.0, 0.3]}, "outlier_exposure.flow_patches.scale"),
])
def test_bad_settings_name_the_key(toy_world, tmp_path, fp, key) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(_cfg(toy_world, tmp_path, **fp))


def test_default_configs_keep_their_hash(toy_world) -> None:
    base = tiny_config(toy_world)
    spelled = tiny_config(toy_world)
    spelled["outlier_exposure"]["sources"] = {"cutouts": 1.0, "flow_patches": 0.0}
    assert config_from_dict(spelled).sha256() == config_from_dict(base).sha256()
    spelled["outlier_exposure"]["sources"]["flow_patches"] = 1.0
    assert config_from_dict(spelled).sha256() != config_from_dict(base).sha256()
    assert config_from_dict(base).outlier_exposure.sources.flow_negatives == 0.0  # never a default


# ------------------------------------------------------------------ the paste


@pytest.mark.parametrize("kind", SHAPE_KINDS)
def test_shape_masks_fill_their_box(kind) -> None:
    rng = np.random.default_rng(0)
    for shape in ((3, 5), (40, 25), (120, 160)):
        m = shape_mask(shape, kind, rng)
        assert m.shape == shape and m.dtype == bool and 0.25 < m.mean() <= 1.0


def test_pasted_patches_are_labelled_anomaly_and_nothing_else_changes() -> None:
    rng = np.random.default_rng(0)
    bank = PatchBank({16: rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8),
                      64: rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)})
    image = np.full((120, 160, 3), 128, np.uint8)
    label = np.zeros((120, 160), np.uint8)
    label[:10] = 255  # void: pasted pixels override it
    cfg = FlowPatchConfig(probability=1.0, count=(1, 3), scale=(0.03, 0.6), min_change=0)
    areas = []
    for _ in range(30):
        out, lab, pasted = paste_flow_patches(image, label, bank, cfg, rng)
        changed = (out != image).any(axis=2)
        assert pasted and (lab == 1).any()
        assert not (changed & (lab != 1)).any()  # every changed pixel is labelled anomaly
        assert np.array_equal(lab[lab != 1], label[lab != 1])  # other labels untouched
        areas.append(int((lab == 1).sum()))
    assert min(areas) < 60 and max(areas) > 2000  # small (far) and large (near) pastes
    assert np.array_equal(image, np.full((120, 160, 3), 128, np.uint8))  # input not modified


def test_a_patch_matching_the_background_is_not_pasted() -> None:
    rng = np.random.default_rng(0)
    bank = PatchBank({16: np.full((2, 16, 16, 3), 100, np.uint8)})
    image = np.full((64, 64, 3), 104, np.uint8)
    out, lab, pasted = paste_flow_patches(image, None, bank, FlowPatchConfig(probability=1.0, min_change=16), rng)
    assert not pasted and not lab.any() and np.array_equal(out, image)


def test_bank_round_trips_through_npz(tmp_path) -> None:
    bank = PatchBank({32: np.zeros((2, 32, 32, 3), np.uint8), 16: np.ones((3, 16, 16, 3), np.uint8)})
    bank.save(tmp_path / "b.npz")
    again = PatchBank.load(tmp_path / "b.npz")
    assert list(again.patches) == [16, 32] and len(again) == 5
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="delete it to regenerate"):
        PatchBank.load(tmp_path / "bad.npz")


# ------------------------------------------------------------------ training frames and the CLI


def test_training_frames_paste_flow_patches_by_weight(generated, toy_world) -> None:
    from flowclas_ros.training.batches import TrainingFrames

    c = _cfg(toy_world, generated["cache"])
    c["outlier_exposure"].update(probability=0.8, sources={"cutouts": 0.0, "procedural": 1.0, "flow_patches": 1.0})
    frames = TrainingFrames(config_from_dict(c))
    counts: dict[str, int] = {}
    for step in range(12):
        for f in frames.batch(step):
            counts[f.source] = counts.get(f.source, 0) + 1
            assert f.modified == (f.source != "none")
            if f.source == "none":
                assert not (f.label == 1).any()
    assert counts.get("flow_patches", 0) >= 8 and counts.get("procedural", 0) >= 8
    labelled = [(f.label == 1).any() for s in range(12) for f in frames.batch(s) if f.source == "flow_patches"]
    assert np.mean(labelled) > 0.7  # (a paste that matches the background is dropped)


def test_oe_option_switches_sources() -> None:
    from flowclas_ros.training.recipes import oe_overrides

    got = oe_overrides("flow_patches, procedural=2")
    assert "outlier_exposure.sources.flow_patches=1.0" in got
    assert "outlier_exposure.sources.procedural=2.0" in got
    assert "outlier_exposure.sources.cutouts=0.0" in got
    for bad, msg in (("", "at least one"), ("blobs", "unknown source 'blobs'"), ("cutouts=x", "must be a number"),
                     ("cutouts=0", "must be > 0")):
        with pytest.raises(ConfigError, match=msg):
            oe_overrides(bad)


def test_model_card_names_flow_patches(toy_world, tmp_path) -> None:
    from flowclas_ros.deploy.model_card import describe_oe

    cfg = config_from_dict(_cfg(toy_world, tmp_path))
    line = describe_oe(cfg.outlier_exposure)
    assert "flow-generated image patches (100% of OE frames" in line and "latent" not in line
