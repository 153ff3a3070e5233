"""Cameras, rigid transforms, absolute pose estimation and pose errors."""

from segloc.geometry.camera import CAMERA_MODELS, Camera, distort_normalized
from segloc.geometry.transforms import (
    Rigid3,
    axis_angle_to_matrix,
    interpolate_rigid,
    matrix_to_axis_angle,
    matrix_to_quat_wxyz,
    pose_error,
    quat_wxyz_to_matrix,
)

__all__ = [
    "CAMERA_MODELS",
    "Camera",
    "Rigid3",
    "axis_angle_to_matrix",
    "distort_normalized",
    "interpolate_rigid",
    "matrix_to_axis_angle",
    "matrix_to_quat_wxyz",
    "pose_error",
    "quat_wxyz_to_matrix",
]
