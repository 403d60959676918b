"""`flowclas-ros regions`: set (or remove) the region-evidence stage a model file carries."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("regions", help="copy a model with the region-evidence stage it carries "
                       "set (--set KEY=VALUE; defaults for keys not given) or removed (--off): "
                       "enclosed untextured surfaces take the score of their flagged outline "
                       "(runtime/regions.py); with --depth the depth region stage instead: objects "
                       "standing on the ground in aligned depth take a quantile of their own score "
                       "(runtime/depth_regions.py); no retraining")
    p.add_argument("model", help="an exported ONNX model")
    p.add_argument("--out", required=True, help="the new model file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting, e.g. --set edge_score=1.0 --set 'image_edges=[40,120]'")
    p.add_argument("--off", action="store_true", help="remove the stage")
    p.add_argument("--depth", action="store_true",
                   help="set or remove the depth region stage (runs on frames with aligned depth)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    import yaml

    from flowclas_ros.config import ConfigError
    from flowclas_ros.deploy.onnx_metadata import set_depth_regions, set_region_evidence
    from flowclas_ros.runtime.depth_regions import DEPTH_REGIONS_KEY, DepthRegions, DepthRegionsError
    from flowclas_ros.runtime.regions import REGION_KEY, RegionEvidence, RegionEvidenceError

    if a.off and a.set:
        raise ConfigError("regions: --off and --set exclude each other")
    settings = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"regions: --set {item!r} is not KEY=VALUE")
        settings[key.strip()] = yaml.safe_load(value)
    try:
        if a.depth:
            stage = None if a.off else DepthRegions.from_dict(settings, "regions --depth --set")
            key, info = DEPTH_REGIONS_KEY, set_depth_regions(a.model, a.out, stage)
        else:
            regions = None if a.off else RegionEvidence.from_dict(settings, "regions --set")
            key, info = REGION_KEY, set_region_evidence(a.model, a.out, regions)
    except (RegionEvidenceError, DepthRegionsError) as exc:
        raise ConfigError(str(exc)) from exc
    print(f"{a.out}: {key} = {info.extra.get(key, 'off')}")
    return 0
