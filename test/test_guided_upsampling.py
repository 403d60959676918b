"""Image-guided upsampling of the score grid: edges follow the image, exports to ONNX, and is a
post-processing key that `calibrate` changes on a trained model."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from flowclas_ros.cli import main as cli_main
from flowclas_ros.config import ConfigError, config_from_dict
from flowclas_ros.deploy.export import check_parity, export_onnx, parity_images
from flowclas_ros.model.guided_upsampling import box_mean, guided_upsample
from flowclas_ros.training.calibration import recalibrate
from flowclas_ros.training.checkpoint import load_checkpoint


def _scene(seed: int = 0, noise: float = 0.05):
    """A noisy background (noise std in normalised units; 0.05 ~ 6 grey levels) with a
    differently coloured square; the coarse score marks the grid cells the square touches (as a
    stride-8 flow would)."""
    rng = np.random.default_rng(seed)
    h, w, stride = 96, 128, 8
    guide = torch.tensor(rng.normal(0.0, noise, (1, 3, h, w)), dtype=torch.float32)
    guide[:, 0] += 0.3
    truth = torch.zeros(1, 1, h, w)
    truth[..., 37:70, 45:83] = 1.0  # not aligned with the 8-pixel grid
    guide = guide + truth * torch.tensor([-1.0, 0.8, 0.5]).view(1, 3, 1, 1)
    coarse = F.avg_pool2d(truth, stride)  # partial cells get partial scores, like a real flow
    return guide, coarse, truth


def test_edges_follow_the_guide_image():
    guide, coarse, truth = _scene()
    bilinear = F.interpolate(coarse, size=truth.shape[-2:], mode="bilinear", align_corners=False)
    guided = guided_upsample(coarse, guide, 8, radius=2, eps=1e-3)
    err_bilinear = (bilinear - truth).abs().mean().item()
    err_guided = (guided - truth).abs().mean().item()
    assert guided.shape == truth.shape
    assert err_guided < 0.5 * err_bilinear, (err_guided, err_bilinear)
    # ranking, which is what AUPRC sees: the square's pixels outrank the background's
    inside, outside = guided[truth == 1], guided[truth == 0]
    assert (inside.min() > outside.max()).item()


def test_flat_score_stays_flat_and_huge_eps_ignores_the_image():
    guide, coarse, _ = _scene(1)
    flat = guided_upsample(torch.full_like(coarse, 3.5), guide, 8, radius=2, eps=1e-3)
    assert torch.allclose(flat, torch.full_like(flat, 3.5), atol=1e-4)
    smooth = guided_upsample(coarse, guide, 8, radius=1, eps=1e6)
    # with a huge ridge the fit is a box-smoothed constant: no guide texture leaks into the map
    assert float(smooth.std()) < float(coarse.std())
    # ... exactly: the twice box-averaged coarse score, bilinearly upsampled
    plain = F.interpolate(box_mean(box_mean(coarse, 1), 1), size=guide.shape[-2:],
                          mode="bilinear", align_corners=False)
    assert (smooth - plain).abs().max().item() < 1e-3


def test_exports_to_onnx_and_matches_torch(tmp_path):
    class Up(torch.nn.Module):
        def forward(self, score, image):
            return guided_upsample(score, image, 8, radius=2, eps=1e-3)

    guide, coarse, _ = _scene(2)
    path = tmp_path / "g.onnx"
    torch.onnx.export(Up(), (coarse, guide), str(path), input_names=["score", "image"],
                      output_names=["out"], opset_version=17, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"score": coarse.numpy(), "image": guide.numpy()})[0]
    want = Up()(coarse, guide).numpy()
    assert np.abs(got - want).max() < 1e-4


def test_config_keys_are_checked_and_old_hashes_stay(tmp_path):
    base = tiny_config(tmp_path)
    before = config_from_dict(base, tmp_path).sha256()
    base["model"]["score_guided_radius"] = 0  # the default, written out: same hash
    assert config_from_dict(base, tmp_path).sha256() == before
    base["model"]["score_guided_radius"] = 2
    assert config_from_dict(base, tmp_path).sha256() != before
    for key, value in (("score_guided_radius", -1), ("score_guided_eps", 0.0)):
        bad = tiny_config(tmp_path)
        bad["model"][key] = value
        with pytest.raises(ConfigError, match=f"model.{key}"):
            config_from_dict(bad, tmp_path)


def test_calibrate_switches_a_trained_model_to_guided_upsampling(trained, toy_world, tmp_path):
    out = tmp_path / "guided.pt"
    assert cli_main(["calibrate", str(trained["checkpoint"]), "--out", str(out),
                     "--set", "model.score_guided_radius=2",
                     "--set", "model.score_guided_eps=1e-3"]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["model"]["score_guided_radius"] == 2
    assert ckpt["recalibrated_from"] == load_checkpoint(trained["checkpoint"])["config_sha256"]
    assert ckpt["calibration"]["threshold"] == 1.0
    onnx_path = tmp_path / "guided.onnx"
    export_onnx(out, onnx_path)
    frames = parity_images(config_from_dict(ckpt["config"]), limit=3,
                           data_dir=str(toy_world / "test"))
    res = check_parity(out, onnx_path, frames)
    assert res["relative"] < 1e-3, res
    # keys that need retraining are refused, naming the key
    with pytest.raises(ConfigError, match="model.flow.steps"):
        recalibrate(trained["checkpoint"], tmp_path / "x.pt", ["model.flow.steps=2"])


def test_model_card_states_the_upsampling(tmp_path):
    from flowclas_ros.model.score import describe_score

    cfg = config_from_dict(tiny_config(tmp_path), tmp_path)
    assert "bilinear upsampling" in describe_score(cfg.model)
    cfg.model.score_guided_radius, cfg.model.score_guided_eps = 2, 1e-3
    text = describe_score(cfg.model)
    assert "guided filter, radius 2 cells, eps 0.001" in text



def test_calibrate_changes_the_input_size_of_a_convolutional_model(trained, tmp_path):
    from flowclas_ros.runtime.detector import Detector

    out = tmp_path / "small.pt"
    recalibrate(trained["checkpoint"], out, ["model.input_size=[48,64]"])
    onnx_path = tmp_path / "small.onnx"
    info = export_onnx(out, onnx_path)
    assert info.input_size == (48, 64)
    heat = Detector(onnx_path).heatmap(np.zeros((96, 128, 3), np.uint8))
    assert heat.shape == (96, 128) and np.isfinite(heat).all()
    # a size the backbone cannot take is refused by the config check, naming the key
    with pytest.raises(ConfigError, match="model.input_size"):
        recalibrate(trained["checkpoint"], tmp_path / "bad.pt", ["model.input_size=[50,64]"])


def test_grey_guides_and_flat_images_stay_finite():
    """Mono cameras give three equal channels (a singular colour covariance) and blank frames give
    none at all: the ridge keeps the solve finite and the edge still snaps. (With a single noisy
    channel, pixel noise near edges passes into the map: at 6 grey levels of noise and this
    contrast the mean error is no better than bilinear; at 2 levels it is.)"""
    guide, coarse, truth = _scene(3, noise=0.015)
    # a mono camera: three equal channels; the obstacle is brighter than the floor
    grey = (guide[:, :1] + 0.6 * truth).expand(-1, 3, -1, -1).contiguous()
    out = guided_upsample(coarse, grey, 8, radius=2, eps=1e-3)
    assert torch.isfinite(out).all()
    bilinear = F.interpolate(coarse, size=truth.shape[-2:], mode="bilinear", align_corners=False)
    assert (out - truth).abs().mean() < (bilinear - truth).abs().mean()
    flat = guided_upsample(coarse, torch.zeros_like(guide), 8, radius=2, eps=1e-3)
    assert torch.isfinite(flat).all()
