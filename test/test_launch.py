"""Launch file, parameter file, RViz config and packaging, checked without a ROS launch system
(launch / launch_ros are not installable here; where they are, the launch description is built)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml

from flowclas_ros.runtime.node_interface import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("detector_launch", ROOT / "launch" / "detector.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_params_file_matches_the_node_declarations():
    data = yaml.safe_load((ROOT / "config" / "detector.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, (default, *_rest) in PARAMETERS.items():
        value = params[name]
        if isinstance(default, float):
            assert math.isclose(value, default), name
        else:
            assert value == default and type(value) is type(default), name


def test_launch_file_arguments_and_readme():
    mod = _load_launch_module()
    names = [a[0] for a in mod.ARGUMENTS]
    assert names == ["image_topic", "params_file", "model", "namespace", "compressed", "use_depth",
                     "depth_topic", "camera_info_topic", "log_level", "dds_profile"]
    readme = (ROOT / "README.md").read_text()
    for name, default, _ in mod.ARGUMENTS:
        assert f"`{name}`" in readme, f"launch argument {name} is not documented in the README"
    assert dict((a[0], a[1]) for a in mod.ARGUMENTS)["image_topic"] == "/camera/image_raw"


def test_launch_description_builds_where_ros_launch_exists():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI")
    from launch.actions import DeclareLaunchArgument

    ld = _load_launch_module().generate_launch_description()
    declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == [a[0] for a in _load_launch_module().ARGUMENTS]


def test_rviz_config_shows_the_node_outputs():
    cfg = yaml.safe_load((ROOT / "config" / "detector.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in cfg["Visualization Manager"]["Displays"]}
    for out in ("overlay", "anomaly_heatmap", "obstacle_mask", "obstacle_points", "obstacles"):
        assert f"/flowclas_detector/{out}" in topics
    classes = {d["Class"] for d in cfg["Visualization Manager"]["Displays"]}
    assert {"rviz_default_plugins/PointCloud2", "rviz_default_plugins/MarkerArray"} <= classes


def test_setup_installs_launch_config_and_entry_points():
    from distutils.core import run_setup  # setuptools' shim

    dist = run_setup(str(ROOT / "setup.py"), stop_after="init")
    files = {dest: srcs for dest, srcs in dist.data_files}
    assert "launch/detector.launch.py" in files["share/flowclas_ros/launch"]
    assert {"config/detector.yaml", "config/detector.rviz"} <= set(files["share/flowclas_ros/config"])
    assert files["share/ament_index/resource_index/packages"] == ["resource/flowclas_ros"]
    assert "package.xml" in files["share/flowclas_ros"]
    scripts = dist.entry_points["console_scripts"]
    assert "detector = flowclas_ros.ros.node:main" in scripts
    assert (ROOT / "setup.cfg").read_text().count("$base/lib/flowclas_ros") == 2
