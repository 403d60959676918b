"""What the runtime needs to know about a model, and where the default model lives.

An exported model is ONE file: these fields travel in the ONNX `metadata_props` as strings, so a
deployed file carries its own input size, normalisation, score normalisation and calibrated
threshold. A file without them (or from a newer format) is refused with a message saying which
field is missing, instead of being run with guessed preprocessing.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from flowclas_ros.runtime.node_interface import DEFAULT_ROLE, MODEL_ROLES

FORMAT_VERSION = 1
DEFAULT_MODEL_NAME = MODEL_ROLES[DEFAULT_ROLE][0]
# Role name -> shipped file (the table with what each role is for: node_interface.MODEL_ROLES).
MODEL_ALIASES = {role: file for role, (file, _) in MODEL_ROLES.items()}
# A graph input larger than this is refused at load, before ONNX Runtime allocates for it (the
# shipped models run at 240x320; 4K frames are 2160x3840).
MIN_INPUT_SIDE, MAX_INPUT_SIDE = 16, 4096

# The graph `flowclas-ros export` writes: one NCHW float32 input, one score output, a dynamic batch.
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "image", "score"
BATCH_DIM = "batch"

# Keys of `ModelInfo.extra` that change how a model may be handled.
PRECISION_KEY = "precision"  # what runs below fp32 (`flowclas-ros quantize`)
INT8_FEATURES_KEY = "backbone_int8_features"  # the flow learned int8 backbone features: from where


class ModelFileError(RuntimeError):
    """A model file is missing, unreadable, not a FlowCLAS model, or incompatible."""


@dataclass(frozen=True)
class ModelInfo:
    input_size: tuple[int, int]  # (height, width) the graph runs at
    mean: tuple[float, float, float]  # on [0,1] RGB
    std: tuple[float, float, float]
    resize_policy: str  # stretch | letterbox
    threshold: float  # calibrated obstacle threshold, in output score units
    threshold_rule: str
    score_offset: float  # raw-score normalisation baked into the graph (informational)
    score_scale: float
    model_version: str
    config_sha256: str
    backbone: str = "efficientnet_lite0"
    feature_stride: int = 16
    color_order: str = "RGB"
    layout: str = "NCHW"
    created: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    _JSON_FIELDS = ("input_size", "mean", "std")

    def to_metadata(self) -> dict[str, str]:
        """Flatten to the string->string map stored in ONNX metadata_props."""
        out = {"flowclas.format_version": str(FORMAT_VERSION)}
        for key, value in asdict(self).items():
            if key == "extra":
                continue
            out[key] = json.dumps(list(value)) if key in self._JSON_FIELDS else str(value)
        out.update(self.extra)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> "ModelInfo":
        version = meta.get("flowclas.format_version")
        if version is None:
            raise ModelFileError(f"{source}: not a flowclas_ros model (no 'flowclas.format_version' "
                                 "in its ONNX metadata); export it with `flowclas-ros export`")
        if not version.isdigit() or int(version) > FORMAT_VERSION:
            raise ModelFileError(f"{source}: model format {version} is newer than this runtime "
                                 f"supports ({FORMAT_VERSION}); upgrade flowclas_ros")
        kwargs: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        try:
            for key, f in fields.items():
                if key not in meta:
                    if f.default is dataclasses.MISSING:
                        raise ModelFileError(f"{source}: model metadata lacks required key '{key}'")
                    continue
                raw = meta[key]
                if key in cls._JSON_FIELDS:
                    kwargs[key] = tuple(json.loads(raw))
                elif f.type in ("float", float):
                    kwargs[key] = float(raw)
                elif f.type in ("int", int):
                    kwargs[key] = int(raw)
                else:
                    kwargs[key] = raw
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: malformed model metadata: {exc}") from exc
        known = set(fields)
        kwargs["extra"] = {k: v for k, v in meta.items() if k not in known and k != "flowclas.format_version"}
        info = cls(**kwargs)
        if len(info.input_size) != 2 or len(info.mean) != 3 or len(info.std) != 3:
            raise ModelFileError(f"{source}: malformed input_size/mean/std in model metadata")
        if info.resize_policy not in ("stretch", "letterbox"):
            raise ModelFileError(f"{source}: unknown resize_policy '{info.resize_policy}'")
        h, w = info.input_size
        if not (MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE):
            raise ModelFileError(f"{source}: input_size {h}x{w} is outside {MIN_INPUT_SIDE}.."
                                 f"{MAX_INPUT_SIDE} pixels a side (refused before allocating it)")
        numbers = {"threshold": info.threshold, "score_offset": info.score_offset,
                   "score_scale": info.score_scale, **dict(zip(("mean_r", "mean_g", "mean_b"), info.mean)),
                   **dict(zip(("std_r", "std_g", "std_b"), info.std))}
        bad = [k for k, v in numbers.items() if not math.isfinite(float(v))]
        if bad:
            raise ModelFileError(f"{source}: non-finite model metadata {', '.join(bad)}: the model "
                                 "would answer every frame with a meaningless mask")
        if min(info.std) <= 0 or info.score_scale <= 0:
            raise ModelFileError(f"{source}: std and score_scale in the metadata must be > 0")
        return info


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The metadata of an ONNX model file, read (and checked) before any runtime loads the graph,
    so an oversized or broken model is refused before anything is allocated for it."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several types
        raise ModelFileError(f"{path}: not a loadable ONNX model ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''})") from exc
    return ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, str(path))


def shipped_dirs(kind: str) -> list[Path]:
    """Where the package's shipped `kind` files (models, config) live, in order: the source
    tree's folder, the pip/colcon install prefix's share/flowclas_ros/<kind>, the ament index's
    share directory."""
    out = [Path(__file__).resolve().parents[2] / kind,
           Path(sys.prefix) / "share" / "flowclas_ros" / kind]
    try:  # only on a ROS 2 install; never required
        from ament_index_python.packages import get_package_share_directory

        out.append(Path(get_package_share_directory("flowclas_ros")) / kind)
    except Exception:  # noqa: BLE001 - package or index absent: not an error here
        pass
    return out


def shipped_model_dirs() -> list[Path]:
    """Where shipped models live (`shipped_dirs`)."""
    return shipped_dirs("models")


def default_model_candidates() -> list[Path]:
    """Where the default model is looked for, in order: $FLOWCLAS_MODEL, then
    `shipped_model_dirs()`."""
    out: list[Path] = []
    env = os.environ.get("FLOWCLAS_MODEL")
    if env:
        out.append(Path(env))
    return out + [d / DEFAULT_MODEL_NAME for d in shipped_model_dirs()]


def resolve_model_path(path: Optional[str | os.PathLike]) -> Path:
    """The named model, or the default one; a clear ModelFileError when it does not exist.

    A bare file name that is not a file in the working directory (`flowclas_default_int8.onnx`)
    is looked up among the shipped models, so a launch argument can name one without knowing
    where the package was installed; a role name (`MODEL_ALIASES`: fast, accurate, ...) is that
    role's shipped file."""
    if path:
        path = MODEL_ALIASES.get(str(path), path)
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.is_dir():
            raise ModelFileError(f"model path {p} is a directory, not a model file")
        if p.name == str(path):
            shipped = [d / p.name for d in shipped_model_dirs()]
            for q in shipped:
                if q.is_file():
                    return q
            raise ModelFileError(f"model file not found: {p} (not in the working directory nor "
                                 f"among the shipped models: {', '.join(str(d) for d in shipped)})")
        raise ModelFileError(f"model file not found: {p}")
    candidates = default_model_candidates()
    for p in candidates:
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in candidates)
    raise ModelFileError(f"no model named and no default model found (looked in: {looked}); "
                         "pass a model path or set FLOWCLAS_MODEL")
