"""`flowclas-ros bench` on a tiny setting: it runs and reports every key (numbers are not asserted:
speed belongs in the benchmark's output, not in timed unit tests)."""
from __future__ import annotations

import json
import math

import pytest

from flowclas_ros.cli import main as cli_main


def test_bench_tiny_setting_reports_all_keys(trained, toy_world, tmp_path, capsys):
    from flowclas_ros.deploy.quantize import quantize_flow

    int8 = quantize_flow(trained["onnx"], toy_world / "val", tmp_path / "int8.onnx", frames=2,
                         time_it=False).out
    full = quantize_flow(trained["onnx"], toy_world / "val", tmp_path / "full.onnx", frames=2,
                         time_it=False, backbone=True, force=True).out
    assert cli_main(["bench", "--model", str(trained["onnx"]), "--checkpoint", str(trained["checkpoint"]),
                     "--int8-model", int8, "--int8-model", full, "--other-model", full,
                     "--sizes", "160x120", "--frames", "3", "--threads", "0,1",
                     "--node-seconds", "2", "--node-rate", "10",
                     "--node-param", "intra_op_spinning=false", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("ort_ms_p50_160x120", "torch_ms_p50_160x120", "ort_t1_ms_p50_160x120",
                "ort_inference_ms_p50_160x120", "ort_overlay_ms_p50_160x120",
                "speedup_ort_vs_torch_inference_160x120", "backbone_time_fraction", "gmacs_total",
                "node_latency_ms_p50", "node_latency_ms_p95", "node_rate_hz", "peak_rss_mb"):
        assert key in r and isinstance(r[key], float) and math.isfinite(r[key]), key
    assert len(r["speedup_ort_vs_torch_rounds_160x120"]) == 10 and r["torch_threads"] >= 1
    assert r["int8_models"] == {"ort_int8": int8, "ort_int8_2": full}
    for row in ("ort_int8", "ort_int8_2"):  # int8 models timed in the same rounds
        for slow in ("torch", "ort"):
            pair = f"{row}_vs_{slow}"
            assert r[f"speedup_{pair}_inference_160x120"] > 0 and len(r[f"speedup_{pair}_rounds_160x120"]) == 10
        assert r[f"{row}_inference_ms_p50_160x120"] > 0
    assert r["other_models"] == {"ort_other": full}  # a fast / accurate pair timed in one run
    assert r["speedup_ort_vs_ort_other_inference_160x120"] > 0 and r["ort_other_ms_p50_160x120"] > 0
    for name in ("ort", "ort_nospin"):  # the CPU cost at a camera's pace, spinning on and off
        assert r[f"{name}_paced30_cpu_percent_160x120"] > 0 and r[f"{name}_paced30_median_ms_160x120"] > 0
    assert r["ort_nospin_inference_ms_p50_160x120"] > 0
    assert r["node_cpu_percent"] > 0 and r["node_params"] == {"intra_op_spinning": "false"}
    assert r["node_heatmaps_received"] > 0 and r["node_sent"] >= r["node_heatmaps_received"]
    assert 0 < r["backbone_time_fraction"] < 1 and r["gmacs_backbone"] < r["gmacs_total"]
    import onnxruntime as ort

    if not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        assert r["gpu"].startswith("not measured")  # said, not silently left out
    else:
        assert r["gpu"].startswith("measured: ")


@pytest.mark.slow
def test_node_bench_with_depth_reports_the_3d_outputs(trained, capsys):
    assert cli_main(["bench", "--model", str(trained["onnx"]), "--sizes", "160x120", "--frames", "2",
                     "--node-seconds", "2", "--node-rate", "10", "--node-depth",
                     "--node-param", "threshold=0.0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["node_depth"] is True and r["node_3d_received"] > 0 and r["node_depth_matched"] > 0
    for key in ("node_latency_ms_p50", "node_latency_ms_p95", "node_heatmap_latency_ms_p50",
                "node_obstacles3d_ms_p50"):
        assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, key


def test_spinning_option_reaches_the_onnxruntime_session(trained):
    from flowclas_ros.runtime.detector import Detector

    for spinning, value in ((True, "1"), (False, "0")):
        opts = Detector(trained["onnx"], spinning=spinning).backend.session.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == value


def test_gpu_rows_follow_what_the_machine_has():
    from flowclas_ros.tools.bench import accelerator_rows

    assert accelerator_rows(["CPUExecutionProvider"], torch_cuda=False, has_checkpoint=True) == {}
    rows = accelerator_rows(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                            torch_cuda=True, has_checkpoint=True)
    assert set(rows) == {"ort_cuda", "ort_trt", "ort_trt_fp16", "torch_cuda"}
    assert rows["ort_trt"]["providers"][0] == "tensorrt" and rows["ort_trt_fp16"]["trt_fp16"] is True
    assert rows["torch_cuda"]["from_checkpoint"] is True
    # torch on CUDA needs the checkpoint; ORT's CUDA provider alone gives one row
    assert set(accelerator_rows(["CUDAExecutionProvider"], torch_cuda=True, has_checkpoint=False)) == {"ort_cuda"}
