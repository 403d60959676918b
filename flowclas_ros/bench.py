"""Detector timing per backend and frame size (the seed of `flowclas-ros bench`).

Warm-up first, then median and p95 over many frames, each backend measured in the same process on
the same frame, so the ratios are meaningful. Prints; asserts nothing (speed targets live here,
not in unit tests).
"""
from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .runtime.detector import Detector


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-looking test frame: the toy world rendered at the requested size."""
    from .data.toy import render_inlier_scene

    return render_inlier_scene(np.random.default_rng(seed), size=(h, w))


def time_detector(det: Detector, rgb: np.ndarray, frames: int, warmup: int = 5) -> dict[str, float]:
    for _ in range(warmup):
        det.detect(rgb)
    stages: dict[str, list[float]] = {}
    for _ in range(frames):
        for k, v in det.detect(rgb).timings_ms.items():
            stages.setdefault(k, []).append(v)
    out = {f"{k}_ms_p50": float(np.median(v)) for k, v in stages.items()}
    out["total_ms_p95"] = float(np.percentile(stages["total"], 95))
    return out


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def run_bench(model: Optional[str], checkpoint: Optional[str], sizes: Sequence[tuple[int, int]],
              frames: int = 50, providers: Sequence[str] = ("cpu",)) -> dict[str, float | str]:
    """{backend}_ms_p50_{W}x{H} (+ p95 and per-stage medians) for ONNX Runtime and torch eager."""
    backends: dict[str, Detector] = {"ort": Detector(model, providers=providers)}
    if checkpoint:
        backends["torch"] = Detector(checkpoint)
    result: dict[str, float | str] = {"model": str(backends["ort"].model_path),
                                      "providers": ",".join(backends["ort"].providers)}
    for h, w in sizes:
        rgb = _frame(h, w)
        for name, det in backends.items():
            t = time_detector(det, rgb, frames)
            tag = f"{w}x{h}"
            result[f"{name}_ms_p50_{tag}"] = t["total_ms_p50"]
            result[f"{name}_ms_p95_{tag}"] = t["total_ms_p95"]
            for stage in ("preprocess", "inference", "postprocess"):
                result[f"{name}_{stage}_ms_p50_{tag}"] = t[f"{stage}_ms_p50"]
        if "torch" in backends:
            result[f"speedup_ort_vs_torch_{w}x{h}"] = (result[f"torch_ms_p50_{w}x{h}"]
                                                      / result[f"ort_ms_p50_{w}x{h}"])
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'640x480,1280x720' (WxH, as cameras are named) -> [(480, 640), (720, 1280)]."""
    out = []
    for part in text.split(","):
        w, h = (int(v) for v in part.lower().split("x"))
        out.append((h, w))
    return out


def format_table(result: dict[str, float | str], sizes: Sequence[tuple[int, int]]) -> str:
    lines = [f"model: {result['model']}  providers: {result['providers']}",
             f"{'backend':8s} {'size':>10s} {'p50 ms':>8s} {'p95 ms':>8s} {'infer':>8s} {'pre':>6s} {'post':>6s}"]
    for h, w in sizes:
        tag = f"{w}x{h}"
        for name in ("ort", "torch"):
            if f"{name}_ms_p50_{tag}" in result:
                lines.append(f"{name:8s} {tag:>10s} {result[f'{name}_ms_p50_{tag}']:8.1f} "
                             f"{result[f'{name}_ms_p95_{tag}']:8.1f} "
                             f"{result[f'{name}_inference_ms_p50_{tag}']:8.1f} "
                             f"{result[f'{name}_preprocess_ms_p50_{tag}']:6.1f} "
                             f"{result[f'{name}_postprocess_ms_p50_{tag}']:6.1f}")
        if f"speedup_ort_vs_torch_{tag}" in result:
            lines.append(f"ONNX Runtime vs torch eager at {tag}: "
                         f"{result[f'speedup_ort_vs_torch_{tag}']:.2f}x")
    lines.append(f"peak RSS {result['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)
