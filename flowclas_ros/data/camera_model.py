"""A robot camera's imperfections, applied to clean frames: exposure, vignetting, motion blur,
shot and read noise, 8-bit quantisation, JPEG.

Why: a normalizing flow learns the density of exactly the pixels it is trained on. Trained on
noise-free renders it calls every real sensor's noise unlikely, so false alarms explode on a real
camera. The same model serves two users: the simulator renders frames "as a robot logs them"
(`flowclas-ros sim --camera ...`), and training augments inlier frames, with their pasted outliers,
through it (`augmentation.camera` in the training config), so the flow learns the sensor's density
rather than a clean render's.

Every field is a [min, max] range sampled per frame (equal ends: a fixed value); the all-default
model is the identity. Order of the stages, as in a camera: exposure gain -> vignetting (lens) ->
motion blur (during exposure) -> shot noise (grows with the signal) + read noise (constant) ->
8-bit quantisation -> JPEG (the logger). Labels are not changed: a blurred obstacle keeps its
label, so the outline of the ground truth stays the object's true one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

Range = tuple[float, float]


def _pair(value: Any, name: str) -> Range:
    if isinstance(value, (int, float)):
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, (int, float)) for v in value) or value[0] > value[1]:
        raise ValueError(f"camera model {name}: expected a number or [min, max] with min <= max, "
                         f"got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class CameraModel:
    """Ranges of each imperfection; see the module docstring for the order they apply in."""

    gain: Range = (1.0, 1.0)  # exposure multiplier of the linear intensity
    vignetting: Range = (0.0, 0.0)  # relative brightness lost in the image corners, 0..0.9
    motion_blur_px: Range = (0.0, 0.0)  # length of a linear blur in a random direction, pixels
    shot_noise: Range = (0.0, 0.0)  # std = shot_noise * sqrt(grey level): photon noise
    read_noise: Range = (0.0, 0.0)  # std in grey levels: sensor read noise
    jpeg_quality: Range = (100.0, 100.0)  # 100: no JPEG; lower: encode + decode at that quality

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _pair(getattr(self, f.name), f.name))
        checks = {"gain": (0.05, 20.0), "vignetting": (0.0, 0.9), "motion_blur_px": (0.0, 100.0),
                  "shot_noise": (0.0, 10.0), "read_noise": (0.0, 100.0), "jpeg_quality": (5.0, 100.0)}
        for name, (lo, hi) in checks.items():
            a, b = getattr(self, name)
            if a < lo or b > hi:
                raise ValueError(f"camera model {name}: {[a, b]} is outside [{lo:g}, {hi:g}]")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "CameraModel":
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"camera model: unknown key(s) {sorted(unknown)}")
        return cls(**dict(values))

    @property
    def is_identity(self) -> bool:
        return self == CameraModel()

    def apply(self, rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """HxWx3 uint8 -> HxWx3 uint8 through one draw of the camera model."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"camera model needs HxWx3 uint8, got {rgb.dtype} {rgb.shape}")
        if self.is_identity:
            return rgb
        draw = {f.name: float(rng.uniform(*getattr(self, f.name))) for f in dataclasses.fields(self)}
        img = rgb.astype(np.float32) * draw["gain"]
        if draw["vignetting"] > 0:
            img *= _vignette(img.shape[:2], draw["vignetting"])[..., None]
        if draw["motion_blur_px"] >= 1.0:
            img = cv2.filter2D(img, -1, _blur_kernel(draw["motion_blur_px"], rng.uniform(0, np.pi)),
                               borderType=cv2.BORDER_REFLECT)
        np.clip(img, 0.0, 255.0, out=img)
        std = np.zeros_like(img)
        if draw["shot_noise"] > 0:
            std += draw["shot_noise"] ** 2 * img
        if draw["read_noise"] > 0:
            std += draw["read_noise"] ** 2
        if draw["shot_noise"] > 0 or draw["read_noise"] > 0:
            img += rng.standard_normal(img.shape, dtype=np.float32) * np.sqrt(std)
        out = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        quality = int(round(draw["jpeg_quality"]))
        if quality < 100:
            out = jpeg_roundtrip(out, quality)
        return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as a camera driver's JPEG would (4:2:0, cv2's libjpeg)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _vignette(hw: Sequence[int], strength: float) -> np.ndarray:
    """cos^4-like fall-off: 1 at the centre, 1 - strength in the corners."""
    h, w = hw
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max(h / 2, 1)
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max(w / 2, 1)
    r2 = (y[:, None] ** 2 + x[None, :] ** 2) / 2.0  # 1 in the corners
    return 1.0 - strength * r2 ** 2


def _blur_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line of `length` pixels at `angle` radians."""
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = np.cos(angle) * (length - 1) / 2, np.sin(angle) * (length - 1) / 2
    cv2.line(k, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1,
             cv2.LINE_AA)
    return k / k.sum()


#: What a typical robot camera does to a frame, used by `flowclas-ros sim --camera robot` and as
#: the starting point of training augmentation: mild exposure changes, a little vignetting and
#: motion blur, shot + read noise of a small CMOS sensor (std about 3-7 grey levels), JPEG as the
#: logger stores it.
ROBOT_CAMERA = CameraModel(gain=(0.8, 1.25), vignetting=(0.0, 0.3), motion_blur_px=(0.0, 3.0),
                           shot_noise=(0.2, 0.5), read_noise=(1.0, 4.0), jpeg_quality=(75.0, 95.0))
