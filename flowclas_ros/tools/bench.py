"""`flowclas-ros bench`: where the time goes, per stage and per backend, and the node end to end.

Every backend is measured in the same process on the same frame after a warm-up, so ratios are
meaningful; medians and p95 over many frames. Prints; asserts nothing (speed targets live here,
not in unit tests, which would flake on a noisy machine).
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from flowclas_ros.data.depth_noise import StereoDepthNoise, frame_depth_rng
from flowclas_ros.deploy.open_model import open_detector
from flowclas_ros.deploy.timing import interleaved_times, time_calls
from flowclas_ros.runtime.detector import Detector
from flowclas_ros.runtime.images import image_from_fields, to_msg_fields, to_rgb8
from flowclas_ros.runtime.model_info import resolve_model_path
from flowclas_ros.runtime.obstacles3d import CameraIntrinsics
from flowclas_ros.runtime.processing import heatmap_to_source, threshold_components
from flowclas_ros.runtime.visualize import render_overlay


def sample_depth(h: int, w: int, seed: int = 7) -> tuple[np.ndarray, CameraIntrinsics]:
    """The aligned depth (metres, NaN = no reading, through data/depth_noise.py) and intrinsics of
    :func:`sample_frame`'s frame, for the node's 3D outputs and the depth region stage; a ground
    plane seen from 1 m when pybullet is not installed."""
    import cv2

    try:
        from flowclas_ros.sim.camera import Camera
        from flowclas_ros.sim.scenes import render_frame

        _, _, meta, depth = render_frame("test", 0, seed=seed, with_depth=True)
        k = Camera.from_metadata(meta["camera"]).intrinsics()
        # as a stereo camera measures it (holes, noise): the depth region stage's real work
        depth = StereoDepthNoise().apply(depth, k.fx, frame_depth_rng(seed, "bench"))
    except ImportError:
        f = 0.5 * h / np.tan(np.radians(30.0))
        rows = np.arange(h, dtype=np.float32) - (h - 1) / 2
        ground = np.where(rows > 0, f / np.maximum(rows, 1e-3), np.inf).astype(np.float32)
        return np.repeat(ground[:, None], w, axis=1), CameraIntrinsics(f, f, (w - 1) / 2, (h - 1) / 2, w, h)
    if depth.shape[:2] != (h, w):
        sx, sy = w / depth.shape[1], h / depth.shape[0]
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
        k = CameraIntrinsics(k.fx * sx, k.fy * sy, (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5, w, h)
    return depth, k


def sample_frame(h: int, w: int, seed: int = 7) -> np.ndarray:
    """A representative camera frame at the requested size: a PyBullet benchmark test frame
    (what the shipped model was trained for; seed 7 is not a benchmark seed), or the toy world
    when pybullet is not installed."""
    import cv2

    try:
        from flowclas_ros.sim.scenes import render_frame

        rgb = render_frame("test", 0, seed=seed)[0]
    except ImportError:
        from flowclas_ros.sim.toy import render_inlier_scene

        rgb = render_inlier_scene(np.random.default_rng(seed), size=(h, w))
    return rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def stage_timings(det: Detector, rgb: np.ndarray, frames: int) -> dict[str, list[float]]:
    """ms per stage of the node's per-frame path: decode/convert (rgb8 message bytes -> RGB
    array), preprocess, inference, postprocess (upsample + threshold + components), overlay, and
    message packing of the three outputs; regions: the model's region-evidence stage
    (runtime/regions.py), zoom: its zoomed band (runtime/zoom_band.py: one model pass per tile),
    depth_regions: its depth region stage (runtime/depth_regions.py) on the frame's measured depth
    (:func:`sample_depth`); about nothing for a model without them."""
    data, step = to_msg_fields(rgb, "rgb8")
    h, w = rgb.shape[:2]
    x, geom, placed = det.prepare_with_image(rgb, "rgb8")
    raw = det.backend(x[None])[0]
    score = det.refine(raw, geom, placed)
    heat = heatmap_to_source(score, geom)
    mask, _ = threshold_components(heat, det.threshold, det.min_area)
    overlay = render_overlay(rgb, heat, mask, det.threshold)
    depth_m, k = sample_depth(h, w) if det.depth_regions is not None else (None, None)
    stages = {
        "decode": lambda: to_rgb8(image_from_fields(data, h, w, "rgb8", step), "rgb8"),
        "preprocess": lambda: det.prepare(rgb, "rgb8"),
        "inference": lambda: det.backend(x[None]),
        "regions": lambda: det.refine(raw, geom, placed),
        "zoom": lambda: det.with_zoom(rgb, heat),
        "depth_regions": lambda: det.with_depth(heat, depth_m, k),
        "postprocess": lambda: threshold_components(heatmap_to_source(score, geom), det.threshold,
                                                    det.min_area),
        "overlay": lambda: render_overlay(rgb, heat, mask, det.threshold),
        "packing": lambda: (to_msg_fields(heat, "32FC1"), to_msg_fields(mask, "mono8"),
                            to_msg_fields(overlay, "bgr8")),
        "total_detect": lambda: det.detect(rgb, "rgb8"),
    }
    return {name: time_calls(fn, frames) for name, fn in stages.items()}


def interleaved_inference(dets: dict[str, Detector], rgb: np.ndarray, rounds: int = 10,
                          per_round: int = 10, settle_s: float = 0.3) -> dict[str, list[list[float]]]:
    """`interleaved_times` of each backend's inference on one camera frame."""
    xs = {name: det.prepare(rgb, "rgb8")[0][None] for name, det in dets.items()}
    fns = {name: (lambda det=det, x=xs[name]: det.backend(x)) for name, det in dets.items()}
    return interleaved_times(fns, rounds, per_round, settle_s)


def speedup(times: dict[str, list[list[float]]], fast: str, slow: str) -> tuple[float, list[float]]:
    """slow/fast ratio of the pooled medians, and per round (from `interleaved_inference`)."""
    pooled = float(np.median(sum(times[slow], [])) / np.median(sum(times[fast], [])))
    rounds = [float(np.median(s) / np.median(f)) for f, s in zip(times[fast], times[slow])]
    return pooled, rounds


def paced_cpu(det: Detector, rgb: np.ndarray, rate_hz: float = 30.0,
              frames: int = 60) -> tuple[float, float]:
    """detect() at a camera's pace: (median ms per frame, CPU use in % of one core, busy-waiting
    worker threads included). What a node costs the robot's other processes."""
    for _ in range(3):
        det.detect(rgb, "rgb8")
    period = 1.0 / rate_hz
    times = []
    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    next_t = w0
    for _ in range(frames):
        t = time.perf_counter()
        det.detect(rgb, "rgb8")
        times.append((time.perf_counter() - t) * 1e3)
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    r1, w1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return float(np.median(times)), 100.0 * cpu / (w1 - w0)


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def count_macs(model, input_hw: tuple[int, int]) -> dict[str, float]:
    """Multiply-accumulates of one forward pass (conv + linear), total and backbone only."""
    import torch
    from torch import nn

    counts = {"backbone": 0, "total": 0}

    def hook(module, inputs, output, part: str) -> None:
        w = module.weight
        if isinstance(module, nn.Conv2d):
            macs = output.numel() * (w.shape[1] * w.shape[2] * w.shape[3])
        else:
            macs = output.numel() * w.shape[1]
        counts["total"] += macs
        if part == "backbone":
            counts["backbone"] += macs

    handles = []
    for part, mod in (("backbone", model.backbone), ("head", model.head.flow)):
        for m in mod.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                handles.append(m.register_forward_hook(lambda mo, i, o, p=part: hook(mo, i, o, p)))
    with torch.no_grad():
        model(torch.zeros(1, 3, *input_hw))
    for h in handles:
        h.remove()
    return {k: v / 1e9 for k, v in counts.items()}


def backbone_share(checkpoint: str, frames: int = 20) -> dict[str, float]:
    """Fraction of torch-eager inference spent in the frozen backbone, and the GMACs.

    The backbone and the rest (flow + score post-processing, run on the backbone's cached
    features) are timed alternately frame by frame, so a noisy neighbour slows both alike; the
    fraction is backbone / (backbone + rest), a decomposition of one forward pass. Timing the
    backbone and the whole model in separate blocks gave fractions above 1 on a busy machine."""
    import torch

    from flowclas_ros.deploy.export import load_model_for_export

    model, info = load_model_for_export(checkpoint)
    x = torch.zeros(1, 3, *info.input_size)
    with torch.inference_mode():
        feats = model.backbone(x)

        def rest() -> torch.Tensor:
            return model.upsample(model.grid_score(feats), x)

        for _ in range(3):
            model.backbone(x)
            rest()
        t_bb, t_rest = [], []
        for _ in range(frames):
            t_bb += time_calls(lambda: model.backbone(x), 1, warmup=0)
            t_rest += time_calls(rest, 1, warmup=0)
    bb, rs = float(np.median(t_bb)), float(np.median(t_rest))
    macs = count_macs(model, info.input_size)
    return {"backbone_ms_p50": bb, "head_ms_p50": rs, "model_ms_p50": bb + rs,
            "backbone_time_fraction": bb / (bb + rs), "gmacs_total": macs["total"],
            "gmacs_backbone": macs["backbone"], "feature_grid": list(feats.shape[-2:])}


def accelerator_rows(available_eps: Sequence[str], torch_cuda: bool,
                     has_checkpoint: bool) -> dict[str, dict]:
    """The GPU backends this machine can time, besides the CPU rows: ONNX Runtime's CUDA and
    TensorRT execution providers (fp32 and fp16 engines) when the onnxruntime build has them,
    torch eager on CUDA when torch sees a GPU and a checkpoint is given. name -> Detector kwargs
    (`from_checkpoint`: run the checkpoint, not the ONNX file). Inputs and outputs cross the
    host-device boundary every frame, as in the node."""
    rows: dict[str, dict] = {}
    if "CUDAExecutionProvider" in available_eps:
        rows["ort_cuda"] = {"providers": ["cuda"]}
    if "TensorrtExecutionProvider" in available_eps:
        rows["ort_trt"] = {"providers": ["tensorrt", "cuda"]}
        rows["ort_trt_fp16"] = {"providers": ["tensorrt", "cuda"], "trt_fp16": True}
    if torch_cuda and has_checkpoint:
        rows["torch_cuda"] = {"providers": ["cuda"], "from_checkpoint": True}
    return rows


def _gpu_rows(checkpoint: Optional[str]) -> dict[str, dict]:
    import onnxruntime as ort

    try:
        import torch

        torch_cuda = bool(torch.cuda.is_available())
    except ImportError:
        torch_cuda = False
    return accelerator_rows(ort.get_available_providers(), torch_cuda, checkpoint is not None)


def speedup_pairs(int8_rows: Sequence[str], other_rows: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(fast, slow) backend pairs whose inference ratio the benchmark reports: the int8 models
    against fp32 and torch, the main model against each other model (a `fast` / `accurate` pair)."""
    return ([("ort", "torch")] + [(r, slow) for r in int8_rows for slow in ("torch", "ort")]
            + [("ort", r) for r in other_rows])


def extra_rows(prefix: str, models: Sequence[str]) -> list[str]:
    """Row names of extra models: prefix, prefix_2, prefix_3, ..."""
    return [f"{prefix}_{i + 1}" if i else prefix for i in range(len(models))]


def run_bench(model: Optional[str], checkpoint: Optional[str], sizes: Sequence[tuple[int, int]],
              frames: int = 50, providers: Sequence[str] = ("cpu",),
              threads: Sequence[int] = (0,), int8_models: Sequence[str] = (),
              other_models: Sequence[str] = ()) -> dict:
    """Per-stage medians for ONNX Runtime (each thread setting), int8 models (from
    `flowclas-ros quantize`; rows `ort_int8`, `ort_int8_2`, ...), other models (rows `ort_other`,
    `ort_other_2`, ...: e.g. the `accurate` model beside the `fast` one, timed in the same run)
    and torch eager (when a checkpoint is given); keys `{backend}_ms_p50_{W}x{H}` are the
    detect() totals."""
    backends: dict[str, Detector] = {}
    for n in threads:
        backends["ort" if n == 0 else f"ort_t{n}"] = Detector(model, providers=providers, threads=n)
    backends["ort_nospin"] = Detector(model, providers=providers, threads=0, spinning=False)
    int8_rows, other_rows = extra_rows("ort_int8", int8_models), extra_rows("ort_other", other_models)
    for row, path in [*zip(int8_rows, int8_models), *zip(other_rows, other_models)]:
        backends[row] = Detector(path, providers=providers, threads=0)
    if checkpoint:
        backends["torch"] = open_detector(checkpoint)
    gpu = _gpu_rows(checkpoint)
    for name, kwargs in gpu.items():
        kwargs = dict(kwargs)
        source = checkpoint if kwargs.pop("from_checkpoint", False) else model
        if kwargs.get("trt_fp16"):  # its own engine cache: never load the fp32 engine for it
            kwargs["trt_cache_dir"] = str(resolve_model_path(model).parent / ".trt_cache_fp16")
        backends[name] = open_detector(source, **kwargs)
    ref = next(iter(backends.values()))
    result: dict = {"model": str(ref.model_path), "model_version": ref.info.model_version,
                    "int8_models": {row: str(backends[row].model_path) for row in int8_rows},
                    "other_models": {row: str(backends[row].model_path) for row in other_rows},
                    "providers": ",".join(ref.providers),
                    "model_input": f"{ref.info.input_size[1]}x{ref.info.input_size[0]}",
                    "gpu": ("measured: " + ", ".join(f"{n} ({','.join(backends[n].providers)})"
                                                     for n in gpu)) if gpu else
                    "not measured: no CUDA / TensorRT execution provider in this onnxruntime "
                    "build and no CUDA device for torch"}
    frames_by_size = {(h, w): sample_frame(h, w) for h, w in sizes}
    for (h, w), rgb in frames_by_size.items():
        tag = f"{w}x{h}"
        for name, det in backends.items():
            stages = stage_timings(det, rgb, frames)
            for stage, values in stages.items():
                key = "ms" if stage == "total_detect" else f"{stage}_ms"
                result[f"{name}_{key}_p50_{tag}"] = float(np.median(values))
                if stage in ("total_detect", "inference"):
                    result[f"{name}_{key}_p95_{tag}"] = float(np.percentile(values, 95))
        compared = [n for n in ("ort", *int8_rows, *other_rows, "torch") if n in backends]
        if len(compared) > 1:
            times = interleaved_inference({n: backends[n] for n in compared}, rgb)
            for n in compared:
                result[f"interleaved_{n}_inference_ms_p50_{tag}"] = float(np.median(sum(times[n], [])))
            for fast, slow in speedup_pairs(int8_rows, other_rows):
                if fast in times and slow in times:
                    pooled, rounds = speedup(times, fast, slow)
                    result[f"speedup_{fast}_vs_{slow}_inference_{tag}"] = pooled
                    result[f"speedup_{fast}_vs_{slow}_rounds_{tag}"] = [round(r, 3) for r in rounds]
    h, w = sizes[0]
    for name in ("ort", "ort_nospin"):
        ms, cpu = paced_cpu(backends[name], frames_by_size[(h, w)])
        result[f"{name}_paced30_median_ms_{w}x{h}"] = ms
        result[f"{name}_paced30_cpu_percent_{w}x{h}"] = cpu
    result["peak_rss_mb"] = peak_rss_mb()
    if "torch" in backends:
        import torch

        result["torch_threads"] = torch.get_num_threads()
    return result


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'640x480,1280x720' (WxH, as cameras are named) -> [(480, 640), (720, 1280)]."""
    out = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        out.append((h, w))
    return out


STAGES = ("decode", "preprocess", "inference", "regions", "zoom", "depth_regions", "postprocess", "overlay",
          "packing")


def format_table(result: dict, sizes: Sequence[tuple[int, int]]) -> str:
    names = sorted({k.split("_ms_p50_")[0] for k in result if "_ms_p50_" in k and
                    not any(f"_{s}" in k for s in STAGES)})
    extra = {**result.get("int8_models", {}), **result.get("other_models", {})}  # row -> model file
    lines = [f"model {result['model']} ({result['model_version']}, input {result['model_input']}) "
             f"providers {result['providers']}", f"GPU: {result.get('gpu', 'not measured')}",
             *[f"{row}: {path}" for row, path in sorted(extra.items())],
             f"{'backend':8s} {'frame':>9s} {'detect p50':>10s} {'p95':>6s} " +
             " ".join(f"{s:>11s}" for s in STAGES)]
    for h, w in sizes:
        tag = f"{w}x{h}"
        for name in names:
            if f"{name}_ms_p50_{tag}" not in result:
                continue
            lines.append(f"{name:8s} {tag:>9s} {result[f'{name}_ms_p50_{tag}']:10.1f} "
                         f"{result[f'{name}_ms_p95_{tag}']:6.1f} " +
                         " ".join(f"{result[f'{name}_{s}_ms_p50_{tag}']:11.2f}" for s in STAGES))
        int8_rows = sorted(result.get("int8_models", {}))
        other_rows = sorted(result.get("other_models", {}))
        labels = {"ort": f"ONNX Runtime {Path(result['model']).name}", "torch": "torch eager",
                  **{r: f"ONNX Runtime {Path(path).name}" for r, path in extra.items()}}
        for fast, slow in speedup_pairs(int8_rows, other_rows):
            if f"speedup_{fast}_vs_{slow}_inference_{tag}" not in result:
                continue
            rounds = result[f"speedup_{fast}_vs_{slow}_rounds_{tag}"]
            lines.append(f"inference at {tag}: {labels[fast]} {result[f'speedup_{fast}_vs_{slow}_inference_{tag}']:.2f}x "
                         f"faster than {labels[slow]} (same run, {len(rounds)} interleaved rounds: "
                         f"{result[f'interleaved_{fast}_inference_ms_p50_{tag}']:.2f} vs "
                         f"{result[f'interleaved_{slow}_inference_ms_p50_{tag}']:.2f} ms; per-round "
                         f"ratios {min(rounds):.2f}-{max(rounds):.2f}x)")
    for key in ("backbone_time_fraction", "gmacs_total", "gmacs_backbone"):
        if key in result:
            lines.append(f"{key}: {result[key]:.3f}")
    if "node_latency_ms_p50" in result:
        lines.append(f"node end to end ({result['node_camera']} at {result['node_rate_requested_hz']:g} Hz, "
                     f"{result['node_seconds']:.0f} s): latency p50 {result['node_latency_ms_p50']:.1f} "
                     f"p95 {result['node_latency_ms_p95']:.1f} p99 {result['node_latency_ms_p99']:.1f} ms, "
                     f"processed {result['node_rate_hz']:.1f} Hz, dropped {result['node_dropped']}, "
                     f"node RSS {result['node_rss_mb_start']:.0f} -> {result['node_rss_mb_end']:.0f} MB, "
                     f"node CPU {result['node_cpu_percent']:.0f} % of one core"
                     + (f" (params {result['node_params']})" if result.get("node_params") else ""))
        if result.get("node_depth"):
            lines.append(f"  with depth, latency taken at ~/obstacles: {result['node_3d_received']} 3D frames "
                         f"received, depth matched {result['node_depth_matched']} / unmatched "
                         f"{result['node_depth_unmatched']}, 3D outputs {result['node_obstacles3d_ms_p50']:.1f} "
                         f"ms p50 in the node; heatmap latency p50 {result['node_heatmap_latency_ms_p50']:.1f} "
                         f"p95 {result['node_heatmap_latency_ms_p95']:.1f} ms")
            if result.get("node_depth_regions"):
                lines.append("  depth region stage (frames): " + ", ".join(
                    f"{k} {v}" for k, v in sorted(result["node_depth_regions"].items())))
    h, w = sizes[0]
    for name in ("ort", "ort_nospin"):
        if f"{name}_paced30_cpu_percent_{w}x{h}" in result:
            lines.append(f"{name} paced at 30 Hz ({w}x{h}): detect {result[f'{name}_paced30_median_ms_{w}x{h}']:.1f} ms, "
                         f"CPU {result[f'{name}_paced30_cpu_percent_{w}x{h}']:.0f} % of one core")
    lines.append(f"peak RSS (this process) {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
