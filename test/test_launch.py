"""Launch file, parameter file, RViz config and packaging, checked without a ROS launch system
(launch / launch_ros are not installable here; where they are, the launch description is built)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from flowclas_ros import cli
from flowclas_ros.runtime.node_interface import MODEL_ROLES, PARAMETERS
from flowclas_ros.runtime.params_file import COMMAND, SOURCE, params_file_text, yaml_value

ROOT = Path(__file__).resolve().parents[1]


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("detector_launch", ROOT / "launch" / "detector.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_params_file_is_generated_from_the_parameter_table():
    committed = (ROOT / "config" / "detector.yaml").read_text()
    assert committed == params_file_text(), f"config/detector.yaml is stale: run `{COMMAND}`"
    assert SOURCE in committed.splitlines()[1] and (ROOT / SOURCE).is_file()


def test_params_file_reads_back_as_the_node_declarations():
    params = yaml.safe_load(params_file_text())["/**"]["ros__parameters"]
    assert list(params) == list(PARAMETERS)
    for name, (default, *_rest) in PARAMETERS.items():
        assert params[name] == default and type(params[name]) is type(default), name


def test_node_params_verb_writes_the_committed_file(tmp_path, capsys):
    out = tmp_path / "detector.yaml"
    assert cli.main(["node-params", "--out", str(out)]) == 0
    assert out.read_text() == (ROOT / "config" / "detector.yaml").read_text()
    assert cli.main(["node-params"]) == 0
    assert capsys.readouterr().out.endswith(out.read_text())


@pytest.mark.parametrize("value, text", [(1e-06, "0.000001"), (0.2, "0.2"), (-1.0, "-1.0"), (True, "true"),
                                         (3, "3"), ("a b", '"a b"'), (["cpu", "cuda"], '["cpu", "cuda"]')])
def test_yaml_values_read_back_with_their_type(value, text):
    assert yaml_value(value) == text
    back = yaml.safe_load(text)
    assert back == value and type(back) is type(value)


def test_launch_file_arguments():
    mod = _load_launch_module()
    names = [a[0] for a in mod.ARGUMENTS]
    assert names == ["image_topic", "params_file", "model", "namespace", "compressed", "use_depth",
                     "depth_topic", "camera_info_topic", "log_level", "dds_profile"]
    assert dict((a[0], a[1]) for a in mod.ARGUMENTS)["image_topic"] == "/camera/image_raw"
    model_help = dict((a[0], a[2]) for a in mod.ARGUMENTS)["model"]
    assert all(role in model_help for role in MODEL_ROLES)


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
