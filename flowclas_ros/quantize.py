"""int8 for the flow's convolutions: a faster CPU model that keeps the fp32 model's accuracy.

What is quantised, and why only that: post-training static int8 (ONNX Runtime QDQ, weights int8
per output channel, activations uint8 with ranges observed on calibration frames) of the
normalizing flow's Conv nodes only. The backbone, the log-scale/affine arithmetic, the score and
the guided upsampling stay fp32. Measured on the sim benchmark (README, speed section): int8 of the
whole graph or of the backbone moves the features off the density the flow learned (AUPRC
85.0 -> 73.8 / 74.5), because the flow scores the exact fp32 features; int8 of the flow's
convolutions only perturbs the coupling scales and shifts, and kept val AUPRC (95.92 -> 96.00)
while taking ~18 % off CPU inference on an AVX512-VNNI machine. Without VNNI (or AVX-VNNI / ARM
dot-product) instructions int8 convolutions may be slower than fp32, and on x86 without VNNI
ONNX Runtime's uint8 x int8 kernels can saturate (less accurate): `flowclas-ros quantize` times
both models and compares their scores on the machine it runs on; evaluate there before deploying.

The threshold moves with the scores: the fp32 model's threshold flags some fraction of the
calibration frames' inlier pixels; the int8 model gets the threshold that flags the same fraction
(the model's own threshold rule, carried over without re-deriving it). Frames without labels count
as all inlier (robot logs without obstacles).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["QuantizeReport", "flow_conv_nodes", "quantize_flow", "register_cli"]

FLOW_NODE_PREFIX = "/head/flow/"  # export names nodes after the module path (export.py)
PRECISION_KEY = "precision"  # extra metadata: what runs below fp32


class QuantizeError(RuntimeError):
    """The model cannot be quantised as asked (no flow convolutions, no calibration frames)."""


@dataclass
class QuantizeReport:
    out: str
    frames: int
    nodes_quantized: int
    threshold_fp32: float
    threshold_int8: float
    inlier_flag_rate: float  # fraction of calibration inlier pixels over the fp32 threshold
    max_abs_diff: float  # int8 vs fp32 normalised score on the calibration frames
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
                "kept: the fp32 threshold flags no inlier pixel of these frames (training frames? "
                "calibrate on held-out ones)")
        return (f"wrote {self.out}: {self.nodes_quantized} flow convolutions int8, calibrated on "
                f"{self.frames} frames\n"
                f"threshold {self.threshold_fp32:g} -> {self.threshold_int8:.4g} ({rate}); score "
                f"|int8 - fp32| max {self.max_abs_diff:.3g}, mean {self.mean_abs_diff:.3g}; "
                f"{100 * self.rank_agreement:.3f} % of pixels on the same side of the threshold\n"
                f"{speed}\n"
                f"check accuracy on labelled data before deploying: flowclas-ros evaluate --model {self.out} ...")


def flow_conv_nodes(model: Any, ops: Sequence[str] = ("Conv",)) -> list[str]:
    """Names of the flow's nodes of these types in an exported graph (an onnx.ModelProto)."""
    return [n.name for n in model.graph.node
            if n.op_type in ops and n.name.startswith(FLOW_NODE_PREFIX)]


def _calibration_frames(info: Any, data: str | os.PathLike, layout: str, frames: int,
                        layout_options: Optional[dict] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(preprocessed input, inlier mask in input geometry) for `frames` frames spread over the
    dataset, through the runtime's own preprocessing."""
    from .data.layouts import DatasetError, load_layout, read_image_rgb, read_sample_label
    from .runtime.processing import label_to_input, preprocess

    try:
        samples = load_layout(layout, data, **(layout_options or {}))
    except TypeError as exc:  # an option the reader does not take
        if not layout_options:
            raise
        raise DatasetError(f"layout {layout!r}: bad layout option ({exc})") from exc
    if not samples:
        raise QuantizeError(f"no frames found in {data} (layout {layout})")
    pick = np.unique(np.linspace(0, len(samples) - 1, min(frames, len(samples))).round().astype(int))
    out = []
    for i in pick:
        s = samples[i]
        rgb = read_image_rgb(s.image_path)
        x, geom = preprocess(rgb, info.input_size, info.mean, info.std, info.resize_policy)
        label = read_sample_label(s, expected_shape=rgb.shape[:2])
        if label is None:  # unlabelled frames count as all inlier (module docstring)
            label = np.zeros(rgb.shape[:2], np.uint8)
        out.append((x, label_to_input(label, geom) == 0))
    return out


def _time_interleaved(sessions: Sequence[Any], x: np.ndarray, rounds: int = 5,
                      per_round: int = 15) -> list[float]:
    """p50 ms of each session, alternating blocks so machine noise hits both alike."""
    name = sessions[0].get_inputs()[0].name
    for s in sessions:
        for _ in range(3):
            s.run(None, {name: x})
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for s, t in zip(sessions, times):
            time.sleep(0.05)
            for _ in range(per_round):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                t.append((time.perf_counter() - t0) * 1e3)
    return [float(np.median(t)) for t in times]


def quantize_flow(model_path: str | os.PathLike, data: str | os.PathLike,
                  out: str | os.PathLike, frames: int = 16, layout: str = "generic",
                  time_it: bool = True, layout_options: Optional[dict] = None) -> QuantizeReport:
    """Write an int8-flow copy of an exported FlowCLAS model, with its threshold carried over.
    `data` is read with `load_layout(layout, data, **layout_options)`: a labelled benchmark split,
    or the robot's own logs (`rosbag2` layout, unlabelled frames count as inliers)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .runtime.backends import OnnxRuntimeBackend

    if frames < 1:
        raise QuantizeError(f"--frames must be >= 1 (got {frames})")
    fp32 = OnnxRuntimeBackend(model_path, ("cpu",))
    info = fp32.info
    if PRECISION_KEY in info.extra:
        raise QuantizeError(f"{model_path} is already quantised ({info.extra[PRECISION_KEY]}); "
                            "quantise the fp32 export")
    proto = onnx.load(str(model_path))
    nodes = flow_conv_nodes(proto)
    if not nodes:
        raise QuantizeError(f"{model_path}: no flow convolutions (nodes named {FLOW_NODE_PREFIX}*) "
                            "to quantise; was it exported by `flowclas-ros export`?")
    calib = _calibration_frames(info, data, layout, frames, layout_options)
    inputs = [x[None] for x, _ in calib]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{fp32.input_name: x} for x in inputs])

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return next(self._it, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="flowclas_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "q.onnx"
        quant_pre_process(str(model_path), str(pre), skip_optimization=False,
                          skip_symbolic_shape=True)
        # the pre-processing pass may rename nothing we select, but check: a silent no-op
        # quantisation would be reported as an int8 model
        pre_nodes = set(flow_conv_nodes(onnx.load(str(pre))))
        if not pre_nodes:
            raise QuantizeError(f"{model_path}: the flow convolutions vanished in ONNX Runtime's "
                                "pre-processing pass; cannot quantise")
        # the subnets' ReLUs are selected too, so the quantiser folds each into the uint8 range
        # of its convolution's output (one requantisation between chained convolutions instead
        # of dequantise -> quantise pairs: 11 instead of 23 QuantizeLinear nodes at run time)
        relus = flow_conv_nodes(onnx.load(str(pre)), ("Relu",))
        quantize_static(str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=sorted(pre_nodes) + relus)
        qproto = onnx.load(str(q))

    # scores of both models on the calibration frames -> threshold with the same flag rate
    tmp_out = out.with_name(f".{out.name}.tmp{os.getpid()}")
    _write_with_metadata(qproto, info, tmp_out)
    int8 = OnnxRuntimeBackend(tmp_out, ("cpu",))
    ref_inl, got_inl, diffs, same = [], [], [], []
    for (x, inlier), xb in zip(calib, inputs):
        a, b = fp32(xb)[0], int8(xb)[0]
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
        ms_fp32, ms_int8 = _time_interleaved([fp32.session, int8.session], inputs[0])
    del int8
    precision = (f"int8 flow convolutions ({len(pre_nodes)} Conv, static QDQ, per-channel weights, "
                 f"calibrated on {len(calib)} frames of {data})")
    carry = (f"carried over to int8 at the fp32 model's inlier-pixel flag rate {100 * rate:.3g} % "
             "on the calibration frames" if rate > 0 else
             "kept for int8: the fp32 threshold flags no inlier pixel of the calibration frames")
    _write_with_metadata(qproto, info, tmp_out, threshold=threshold,
                         rule=f"{info.threshold_rule}; {carry}",
                         extra={PRECISION_KEY: precision, "quantized_from": info.model_version})
    os.replace(tmp_out, out)
    return QuantizeReport(out=str(out), frames=len(calib), nodes_quantized=len(pre_nodes),
                          threshold_fp32=info.threshold, threshold_int8=threshold,
                          inlier_flag_rate=rate, max_abs_diff=float(d.max()),
                          mean_abs_diff=float(d.mean()),
                          rank_agreement=float(np.concatenate(same).mean()),
                          ms_fp32=ms_fp32, ms_int8=ms_int8)


def _write_with_metadata(proto: Any, info: Any, path: Path, threshold: Optional[float] = None,
                         rule: Optional[str] = None, extra: Optional[dict[str, str]] = None) -> None:
    """Save `proto` with the fp32 model's metadata; with `extra` (the final write) as the int8
    model: new version suffix, threshold, threshold rule and precision keys."""
    import dataclasses

    import onnx

    new = info
    if extra:
        new = dataclasses.replace(info, threshold=info.threshold if threshold is None else threshold,
                                  model_version=f"{info.model_version}+int8flow",
                                  threshold_rule=rule or info.threshold_rule,
                                  extra={**info.extra, **extra})
    del proto.metadata_props[:]
    for key, value in new.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _cmd_quantize(a: Any) -> int:
    from .data.layouts import parse_layout_option

    report = quantize_flow(a.model, a.data, a.out, frames=a.frames, layout=a.layout,
                           time_it=not a.no_timing,
                           layout_options=dict(parse_layout_option(o) for o in a.layout_opt))
    if a.json:
        print(json.dumps(asdict(report)))
    else:
        print(report.summary())
    return 0


def register_cli(sub: Any) -> None:
    """Add the `quantize` verb (no heavy import here)."""
    p = sub.add_parser("quantize", help="int8 copy of an exported model (flow convolutions only), "
                       "threshold carried over; times fp32 vs int8 on this machine")
    p.add_argument("model", help="the fp32 ONNX file from `flowclas-ros export`")
    p.add_argument("--data", required=True, help="calibration frames (a dataset root; labelled "
                   "frames with obstacles are best: the activation ranges must cover them)")
    p.add_argument("--out", required=True, help="the int8 ONNX file")
    p.add_argument("--frames", type=int, default=16, help="calibration frames (default 16)")
    p.add_argument("--layout", default="generic", help="dataset layout name (default generic; "
                   "rosbag2 for the robot's own logs)")
    p.add_argument("--layout-opt", action="append", default=[], metavar="KEY=VALUE",
                   help="layout reader option, repeatable, e.g. --layout rosbag2 --layout-opt "
                   "topic=/camera/image_raw")
    p.add_argument("--no-timing", action="store_true", help="skip the fp32 vs int8 timing")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=_cmd_quantize)
