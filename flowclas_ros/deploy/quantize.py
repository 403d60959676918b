"""int8 models for the CPU: the flow's convolutions, and the backbone too when the flow learned it.

What is quantised: post-training static int8 (ONNX Runtime QDQ, weights int8 per output channel,
activations uint8 with ranges observed on calibration frames) of the normalizing flow's
convolutions (with their ReLUs) and, with `backbone=True`, of the backbone's convolutions (with
their ReLU6 clips). The coupling arithmetic, the score and the guided upsampling stay fp32.

Why the backbone only for models trained for it: the flow models the density of the features it
was trained on. Under an int8 backbone the features of a flow trained on fp32 features move off
that density (docs/speed.md has the measured loss); a flow trained on the int8
backbone's features (`model.backbone.int8_features: true`; `Int8Features` runs the
same quantised backbone graph in the training loop) is scored on the features it learned. The
backbone's activation ranges come from the same calibration frames in training and here (the
model's metadata names them and they are the default `--data`), so the two graphs agree.
int8 of the flow alone perturbs only the coupling scales and shifts, which keeps the accuracy of a
flow trained on fp32 features (the model cards have the measurements).

Speed: with int8 dot-product instructions (AVX512-VNNI) the int8 convolutions beat fp32. Without VNNI (or
AVX-VNNI / ARM dot-product) instructions they may be slower, and on x86 without VNNI ONNX
Runtime's uint8 x int8 kernels can saturate (less accurate): `flowclas-ros quantize` times both
models and compares their scores on the machine it runs on; evaluate there before deploying.

The threshold moves with the scores: in the model as calibrated in training (fp32; for a flow
trained on int8 features, the int8 backbone + fp32 flow) the threshold flags some fraction of the
calibration frames' inlier pixels; the int8 model gets the threshold that flags the same fraction
(the model's own threshold rule, carried over without re-deriving it). Frames without labels count
as all inlier (robot logs without obstacles).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from flowclas_ros.data.labels import Sample
from flowclas_ros.data.layouts import load_layout
from flowclas_ros.deploy.onnx_metadata import set_metadata
from flowclas_ros.deploy.timing import interleaved_times
from flowclas_ros.runtime.backends import OnnxRuntimeBackend
from flowclas_ros.runtime.model_info import INT8_FEATURES_KEY, PRECISION_KEY, ModelInfo
from flowclas_ros.runtime.quantization import (
    BACKBONE_NODE_PREFIX,
    BACKBONE_OPS,
    FLOW_NODE_PREFIX,
    FLOW_OPS,
    QuantizeError,
    quantize_graph,
)
from flowclas_ros.training.int8_features import calibration_frames

log = logging.getLogger("flowclas_ros.quantize")

@dataclass
class QuantizeReport:
    out: str
    frames: int
    nodes_quantized: int  # convolutions (their ReLU / ReLU6 activations fold into them)
    what: str  # "flow" or "backbone+flow"
    reference: str  # the model the threshold's flag rate and the score differences refer to
    threshold_fp32: float  # the exported model's threshold
    threshold_int8: float
    inlier_flag_rate: float  # calibration inlier pixels over the threshold in the reference
    max_abs_diff: float  # int8 vs reference normalised score on the calibration frames
    mean_abs_diff: float
    rank_agreement: float  # fraction of pixels on the same side of the threshold in both models
    ms_fp32: float  # ORT CPU inference p50, interleaved rounds, this machine
    ms_int8: float

    def summary(self) -> str:
        if self.ms_fp32 != self.ms_fp32:  # NaN: timing skipped
            speed = "inference timing skipped (--no-timing)"
        else:
            faster = self.ms_fp32 / self.ms_int8
            verdict = ("faster" if faster > 1.02 else
                       "NOT faster on this CPU (no int8 dot-product instructions?); keep the fp32 "
                       "model" if faster < 0.98 else "about as fast")
            speed = (f"inference (ONNX Runtime CPU, p50): fp32 {self.ms_fp32:.2f} ms, int8 "
                     f"{self.ms_int8:.2f} ms -> {faster:.2f}x, {verdict}")
        rate = (f"same inlier-pixel flag rate {100 * self.inlier_flag_rate:.3g} %"
                if self.inlier_flag_rate > 0 else
                f"kept: in the reference model ({self.reference}) it flags no inlier pixel of these "
                "frames (training frames? calibrate on held-out ones)")
        return (f"wrote {self.out}: {self.nodes_quantized} {self.what} convolutions int8, calibrated on "
                f"{self.frames} frames\n"
                f"threshold {self.threshold_fp32:g} -> {self.threshold_int8:.4g} ({rate}); score "
                f"|int8 - reference ({self.reference})| max {self.max_abs_diff:.3g}, mean "
                f"{self.mean_abs_diff:.3g}; "
                f"{100 * self.rank_agreement:.3f} % of pixels on the same side of the threshold\n"
                f"{speed}\n"
                f"check accuracy on labelled data before deploying: flowclas-ros evaluate --model {self.out} ...")


def flow_conv_nodes(model: Any, ops: Sequence[str] = ("Conv",)) -> list[str]:
    """Names of the flow's nodes of these types in an exported graph (an onnx.ModelProto)."""
    return [n.name for n in model.graph.node
            if n.op_type in ops and n.name.startswith(FLOW_NODE_PREFIX)]


def load_samples(data: str | os.PathLike, layout: str = "generic",
                 layout_options: Optional[dict] = None) -> list[Sample]:
    """The calibration source's samples, with the layout reader's options."""
    samples = load_layout(layout, data, **(layout_options or {}))
    if not samples:
        raise QuantizeError(f"no frames found in {data} (layout {layout})")
    return samples


def quantize_flow(model_path: str | os.PathLike, data: Optional[str | os.PathLike],
                  out: str | os.PathLike, frames: Optional[int] = None, layout: str = "generic",
                  time_it: bool = True, layout_options: Optional[dict] = None,
                  backbone: bool = False, force: bool = False) -> QuantizeReport:
    """Write an int8 copy of an exported FlowCLAS model (the flow's convolutions; with `backbone`
    the backbone's too), with its threshold carried over. `data` is read with
    `load_layout(layout, data, **layout_options)`: a labelled benchmark split, or the robot's own
    logs (`rosbag2` layout, unlabelled frames count as inliers). For a model trained on int8
    backbone features, `data=None` / `frames=None` take the frames its training calibrated the
    backbone on (from the model's metadata), so the backbone quantises identically."""
    import onnx

    fp32 = OnnxRuntimeBackend(model_path, ("cpu",))
    info = fp32.info
    if PRECISION_KEY in info.extra:
        raise QuantizeError(f"{model_path} is already quantised ({info.extra[PRECISION_KEY]}); "
                            "quantise the fp32 export")
    learned = json.loads(info.extra[INT8_FEATURES_KEY]) if INT8_FEATURES_KEY in info.extra else None
    if backbone and learned is None and not force:
        raise QuantizeError(f"{model_path}: its flow was trained on fp32 backbone features; with "
                            "an int8 backbone it loses accuracy (docs/speed.md). "
                            "Train with model.backbone.int8_features: true, or pass --force")
    if data is None:
        if learned is None:
            raise QuantizeError("--data is required (calibration frames)")
        data, layout, layout_options = learned["root"], learned["layout"], learned["options"]
    if frames is None:
        frames = learned["frames"] if learned is not None and backbone else 16
    if backbone and learned is not None and (
            Path(data).resolve() != Path(learned["root"]).resolve() or frames != learned["frames"]
            or layout != learned["layout"] or (layout_options or {}) != learned["options"]):
        log.warning("calibrating the backbone on other frames than training did (%s frames of %s): "
                    "its int8 ranges, and so its features, will differ from those the flow "
                    "learned; leave out --data / --frames to use the training's", learned["frames"],
                    learned["root"])
    if frames < 1:
        raise QuantizeError(f"--frames must be >= 1 (got {frames})")
    if not flow_conv_nodes(onnx.load(str(model_path))):
        raise QuantizeError(f"{model_path}: no flow convolutions (nodes named {FLOW_NODE_PREFIX}*) "
                            "to quantise; was it exported by `flowclas-ros export`?")
    samples = load_samples(data, layout, layout_options)
    calib = calibration_frames(samples, frames, info.input_size, info.mean, info.std,
                               info.resize_policy)
    inputs = [x[None] for x, _ in calib]

    def select(node: Any) -> bool:
        if node.name.startswith(FLOW_NODE_PREFIX):
            return node.op_type in FLOW_OPS
        return backbone and node.name.startswith(BACKBONE_NODE_PREFIX) and node.op_type in BACKBONE_OPS

    if learned is not None and not backbone:
        log.warning("%s: its flow was trained on int8 backbone features; quantise it with "
                    "--backbone (as it is, the int8 flow sees fp32 features)", model_path)
    qproto, n_nodes = quantize_graph(Path(model_path), inputs, select)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(f".{out.name}.tmp{os.getpid()}")
    tmp_ref = out.with_name(f".{out.name}.ref{os.getpid()}")

    # The reference whose inlier flag rate the int8 threshold keeps: the model as calibrated in
    # training -- fp32, or, for a flow trained on int8 features, the int8 backbone + fp32 flow
    # (the features its calibration saw).
    ref, reference = fp32, "fp32"
    try:
        if backbone and learned is not None:
            ref_proto, _ = quantize_graph(
                Path(model_path), inputs,
                lambda n: n.name.startswith(BACKBONE_NODE_PREFIX) and n.op_type in BACKBONE_OPS)
            _write_with_metadata(ref_proto, info, tmp_ref)
            ref = OnnxRuntimeBackend(tmp_ref, ("cpu",))
            reference = "int8 backbone + fp32 flow, as trained"
        _write_with_metadata(qproto, info, tmp_out)
        int8 = OnnxRuntimeBackend(tmp_out, ("cpu",))
    finally:
        tmp_ref.unlink(missing_ok=True)  # the session holds the graph
    ref_inl, got_inl, diffs, same = [], [], [], []
    for (x, inlier), xb in zip(calib, inputs):
        a, b = ref(xb)[0], int8(xb)[0]
        ref_inl.append(a[inlier])
        got_inl.append(b[inlier])
        diffs.append(np.abs(a - b).ravel())
        same.append(((a > info.threshold) == (b > info.threshold)).ravel())
    ref_all, got_all = np.concatenate(ref_inl), np.concatenate(got_inl)
    if ref_all.size == 0:
        raise QuantizeError(f"the {len(calib)} calibration frames have no inlier pixels")
    rate = float(np.mean(ref_all > info.threshold))
    threshold = float(np.quantile(got_all, 1.0 - rate)) if rate > 0 else info.threshold
    d = np.concatenate(diffs)
    ms_fp32 = ms_int8 = float("nan")
    if time_it:
        x0 = inputs[0]
        times = interleaved_times({"fp32": lambda: fp32(x0), "int8": lambda: int8(x0)},
                                  rounds=5, per_round=15, settle_s=0.05)
        ms_fp32, ms_int8 = (float(np.median(sum(times[k], []))) for k in ("fp32", "int8"))
    int8 = None  # release the session: it holds the temporary file rewritten below
    what = "backbone+flow" if backbone else "flow"
    precision = (f"int8 {'backbone and flow' if backbone else 'flow'} convolutions ({n_nodes} "
                 f"Conv, static QDQ, per-channel weights, calibrated on {len(calib)} frames of "
                 f"{data})" + ("" if not backbone or learned else
                               "; the flow was trained on fp32 features (--force)"))
    carry = (f"carried over to int8 at the inlier-pixel flag rate of the reference model "
             f"({reference}): {100 * rate:.3g} % on the calibration frames" if rate > 0 else
             f"kept for int8: in the reference model ({reference}) it flags no inlier pixel of the "
             "calibration frames")
    _write_with_metadata(qproto, info, tmp_out, threshold=threshold,
                         rule=f"{info.threshold_rule}; {carry}",
                         extra={PRECISION_KEY: precision, "quantized_from": info.model_version},
                         suffix="int8" if backbone else "int8flow")
    os.replace(tmp_out, out)
    return QuantizeReport(out=str(out), frames=len(calib), nodes_quantized=n_nodes, what=what,
                          reference=reference,
                          threshold_fp32=info.threshold, threshold_int8=threshold,
                          inlier_flag_rate=rate, max_abs_diff=float(d.max()),
                          mean_abs_diff=float(d.mean()),
                          rank_agreement=float(np.concatenate(same).mean()),
                          ms_fp32=ms_fp32, ms_int8=ms_int8)


def _write_with_metadata(proto: Any, info: ModelInfo, path: Path, threshold: Optional[float] = None,
                         rule: Optional[str] = None, extra: Optional[dict[str, str]] = None,
                         suffix: str = "int8flow") -> None:
    """Save `proto` with the fp32 model's metadata; with `extra` (the final write) as the int8
    model: new version suffix, threshold, threshold rule and precision keys."""
    import onnx

    new = info
    if extra:
        new = dataclasses.replace(info, threshold=info.threshold if threshold is None else threshold,
                                  model_version=f"{info.model_version}+{suffix}",
                                  threshold_rule=rule or info.threshold_rule,
                                  extra={**info.extra, **extra})
    set_metadata(proto, new)
    onnx.save(proto, str(path))
