"""flowclas_ros: FlowCLAS anomaly / unknown-obstacle detection for ROS 2 robots."""
__version__ = "0.1.0"
