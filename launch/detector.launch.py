"""Start the flowclas_detector node: `ros2 launch flowclas_ros detector.launch.py image_topic:=...`.

Written for ROS 2 Humble, Jazzy and Kilted `launch` / `launch_ros`. The launch imports live inside
the functions so this file (and its argument table) can be loaded and checked where no ROS launch
system is installed; the package's own interface table (runtime/node_interface.py, plain data)
is imported at the top.
"""
from flowclas_ros.runtime.node_interface import MODEL_ROLES

# name, default, description -- every knob of the launch (documented in docs/navigation.md and the
# README; test_docs.py checks every `ros2 launch ... ARG:=` written there against this table)
ARGUMENTS = [
    ("image_topic", "/camera/image_raw",
     "input image topic (with compressed:=true the node subscribes <image_topic>/compressed)"),
    ("params_file", "", "parameters YAML (empty: the installed config/detector.yaml)"),
    ("model", "", "ONNX model path; empty: model_path from the params file, else the shipped model; "
               "a bare name (flowclas_default_int8.onnx): that shipped model; "
               f"{', '.join(MODEL_ROLES)}: the shipped model of that role"),
    ("namespace", "", "namespace of the node (outputs are <namespace>/flowclas_detector/...)"),
    ("compressed", "false", "subscribe sensor_msgs/CompressedImage instead of Image"),
    ("use_depth", "false", "also publish obstacle points (PointCloud2) and boxes (MarkerArray) from "
                           "an aligned depth image and CameraInfo"),
    ("depth_topic", "/camera/depth/image_raw",
     "depth image aligned to the colour image (16UC1 mm or 32FC1 m), with use_depth:=true"),
    ("camera_info_topic", "/camera/camera_info", "CameraInfo of the colour camera, with use_depth:=true"),
    ("log_level", "info", "node log level: debug, info, warn, error"),
    ("dds_profile", "", "Fast DDS profile file for the node; empty: $FASTDDS_DEFAULT_PROFILES_FILE "
                        "if set, else the installed config/fastdds_large_images.xml (camera-sized "
                        "messages over shared memory); none: Fast DDS defaults"),
]


def _launch_setup(context, *args, **kwargs):
    import os

    from ament_index_python.packages import get_package_share_directory
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from flowclas_ros.runtime.node_interface import (
        CAMERA_INFO_TOPIC,
        COMPRESSED_INPUT_TOPIC,
        DEPTH_TOPIC,
        INPUT_TOPIC,
        NODE_NAME,
    )

    def value(name):
        return LaunchConfiguration(name).perform(context)

    params_file = value("params_file") or os.path.join(
        get_package_share_directory("flowclas_ros"), "config", "detector.yaml")
    compressed = value("compressed").strip().lower() in ("true", "1", "yes")
    overrides = {"input_transport": "compressed" if compressed else "raw"}
    if value("use_depth").strip().lower() in ("true", "1", "yes"):
        overrides["use_depth"] = True
    if value("model"):
        overrides["model_path"] = value("model")
    topic = value("image_topic")
    profile = value("dds_profile") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.path.join(
        get_package_share_directory("flowclas_ros"), "config", "fastdds_large_images.xml")
    env = {} if profile == "none" else {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    return [Node(
        package="flowclas_ros", executable="detector", name=NODE_NAME,
        namespace=value("namespace"), output="screen", emulate_tty=True,
        parameters=[params_file, overrides],
        remappings=[(INPUT_TOPIC, topic), (COMPRESSED_INPUT_TOPIC, topic.rstrip("/") + "/compressed"),
                    (DEPTH_TOPIC, value("depth_topic")), (CAMERA_INFO_TOPIC, value("camera_info_topic"))],
        arguments=["--ros-args", "--log-level", value("log_level")],
        additional_env=env,
    )]


def generate_launch_description():
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription

    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, default, desc in ARGUMENTS] + [OpaqueFunction(function=_launch_setup)])
