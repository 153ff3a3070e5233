"""segloc: privacy-preserving visual localization library (ROS-free).

Sub-packages: ``geometry`` (cameras, transforms, pose estimation), ``data`` (dataset readers and
writers, synthetic scenes), ``maps`` (map packages), ``localize`` (online pipelines),
``evaluate`` (metrics, reports), ``models`` and ``runtime`` (networks and inference backends).
"""

import logging

__version__ = "0.1.0"

logger = logging.getLogger("segloc")
logger.addHandler(logging.NullHandler())
