"""`python -m flowclas_ros.cli`: the same as the `flowclas-ros` command."""
import sys

from flowclas_ros.cli import main

sys.exit(main())
