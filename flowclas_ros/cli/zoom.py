"""`flowclas-ros zoom`: give a model the zoomed band (a magnified second look at the rows where
small far obstacles are, runtime/zoom_band.py), fitted on the user's labelled val, or remove it."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoom", help="copy a model with a zoomed band over the rows of small far "
                       "obstacles, its place, score scale and threshold fitted on a labelled val "
                       "(printed); one model pass more per tile; no retraining")
    p.add_argument("model", help="an exported ONNX model")
    p.add_argument("--out", required=True, help="the new model file")
    p.add_argument("--val", help="labelled val frames (images/ + labels/, as `evaluate` reads them)")
    p.add_argument("--zoom", type=float, default=2.0, help="magnification (above 1, up to 4; default 2: "
                   "a band half the frame tall, two tiles on a 4:3 frame)")
    p.add_argument("--center", type=float, help="the band's middle row as a share of the frame height "
                   "(default: the median row of the val's obstacles under 1000 px)")
    p.add_argument("--max-frames", type=int, default=500, help="val frames read at most (default 500)")
    p.add_argument("--off", action="store_true", help="remove the stage; the copy keeps the model's "
                   "threshold unless --threshold is given (the one before the band is in its threshold_rule)")
    p.add_argument("--threshold", type=float, help="with --off: the threshold of the copy")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    import math

    from flowclas_ros.config import ConfigError
    from flowclas_ros.runtime.model_info import read_model_info
    from flowclas_ros.runtime.zoom_band import ZoomBandError

    if not str(a.model).endswith(".onnx"):
        raise ConfigError(f"zoom: {a.model} is not an exported .onnx model (export the checkpoint first)")
    info = read_model_info(a.model)
    if a.off:
        if a.val or a.center is not None:
            raise ConfigError("zoom: --off takes no --val / --center")
        threshold = info.threshold if a.threshold is None else a.threshold
        if not math.isfinite(threshold):
            raise ConfigError(f"zoom: --threshold {a.threshold!r} is not a finite number")
        from flowclas_ros.deploy.onnx_metadata import set_zoom_band

        set_zoom_band(a.model, a.out, None, threshold, info.threshold_rule)
        print(f"{a.out}: zoomed band off, threshold {threshold:g} (threshold rule: {info.threshold_rule})")
        return 0
    if not a.val:
        raise ConfigError("zoom: --val DIR is needed (the band's place, scale and threshold are fitted on it)")
    if a.threshold is not None:
        raise ConfigError("zoom: --threshold goes with --off (with --val the threshold is fitted)")
    if not 1 <= a.max_frames <= 100000:
        raise ConfigError(f"zoom: --max-frames {a.max_frames} is outside 1..100000")
    from flowclas_ros.eval.zoom_calibration import fit_zoom_band, write_zoomed_model

    try:  # bad --zoom / --center are refused before any frame is read
        fit = fit_zoom_band(a.model, a.val, zoom=a.zoom, center=a.center, max_frames=a.max_frames)
    except ZoomBandError as exc:
        raise ConfigError(f"zoom: {exc}") from exc
    write_zoomed_model(a.model, a.out, fit)
    print(fit.report())
    print(f"{a.out}: written")
    return 0
