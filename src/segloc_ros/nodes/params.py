"""The parameters of the segloc_ros nodes: names, defaults, descriptions and checks, without ROS.

The nodes declare exactly these (:class:`segloc_ros.nodes.common.SeglocNode`; which node takes
which: :data:`segloc_ros.nodes.NODES`), ``config/segloc_ros.yaml`` lists them with their
defaults, and a test checks that the running nodes get exactly these defaults from that file. "On configure" in a description means that a change
takes effect at the next configure transition (or a map reload for the localizer options);
the others apply to the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from segloc.localize.priors import APPROXIMATIONS
from segloc.runtime.session import BACKEND_CHOICES

__all__ = [
    "AVAILABLE_BACKENDS",
    "COMMON_PARAMETERS",
    "LOCALIZER_NODE",
    "LOCALIZER_PARAMETERS",
    "LOCALIZING_PARAMETERS",
    "MAP_MANAGER_NODE",
    "MAP_MANAGER_PARAMETERS",
    "PLACE_RECOGNITION_NODE",
    "PLACE_RECOGNITION_PARAMETERS",
    "POSE_REFINEMENT_NODE",
    "POSE_REFINEMENT_PARAMETERS",
    "PRIOR_INPUTS",
    "RETRIEVAL_NODE",
    "RETRIEVAL_PARAMETERS",
    "SEGMENTATION_NODE",
    "SEGMENTATION_PARAMETERS",
    "ParameterSpec",
    "available_backends",
    "check_parameter",
]

SEGMENTATION_NODE = "segmentation_node"
RETRIEVAL_NODE = "retrieval_node"
POSE_REFINEMENT_NODE = "pose_refinement_node"
LOCALIZER_NODE = "localizer_node"
MAP_MANAGER_NODE = "map_manager"
PLACE_RECOGNITION_NODE = "place_recognition_node"

#: Inference backends the nodes can run the segmentation network with (auto: tensorrt where it
#: imports and CUDA is present, else onnxruntime where it imports, else torch; segloc.runtime).
AVAILABLE_BACKENDS: tuple[str, ...] = BACKEND_CHOICES

IMAGE_TRANSPORTS = ("raw", "compressed")


def available_backends() -> tuple[str, ...]:
    """The backends a ``backend`` parameter accepts (:data:`AVAILABLE_BACKENDS`)."""
    return AVAILABLE_BACKENDS


@dataclass(frozen=True)
class ParameterSpec:
    """One node parameter.

    Attributes:
        name: the ROS parameter name.
        default: its default; the type of the default is the parameter's type.
        description: what it does (the ROS parameter descriptor's description).
        minimum: smallest accepted value of a number parameter (None: any).
        positive: a number parameter must be > 0.
        choices: accepted values of a string parameter (None: any).
    """

    name: str
    default: bool | int | float | str
    description: str
    minimum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None


def check_parameter(spec: ParameterSpec, value: object) -> str | None:
    """Why ``value`` is not acceptable for ``spec`` (None when it is)."""
    if type(value) is not type(spec.default):
        return f"parameter {spec.name} takes a {type(spec.default).__name__}, got {value!r}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.positive and value <= 0:
            return f"parameter {spec.name} must be > 0, got {value}"
        if spec.minimum is not None and value < spec.minimum:
            return f"parameter {spec.name} must be >= {spec.minimum:g}, got {value}"
    if spec.choices is not None and value not in spec.choices:
        if spec.name == "backend":
            return f"backend {value!r} is not available; available backends: {', '.join(available_backends())}"
        return f"parameter {spec.name} must be one of {', '.join(spec.choices)}, got {value!r}"
    return None


COMMON_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "map_path",
        "",
        "map package folder. Loaded on configure; setting it while configured loads and swaps the map "
        "atomically (rejected, with the old map kept, when the new one does not load). ~/reload_map reloads it.",
    ),
    ParameterSpec(
        "config_path",
        "",
        "segloc YAML config whose 'localize:' section sets the localizer options ('' = defaults); on configure and map reload.",
    ),
    ParameterSpec(
        "backend",
        "torch",
        "inference backend of the network: torch, onnxruntime, tensorrt (falls back to onnxruntime with an error "
        "diagnostic when no engine loads) or auto (on configure)",
        choices=AVAILABLE_BACKENDS,
    ),
    ParameterSpec("device", "cpu", "torch device of the network: cpu, cuda, cuda:1, ... (on configure)"),
    ParameterSpec(
        "threads", 0, "torch CPU threads of the process and ONNX Runtime intra-op threads, 0 = their defaults (on configure)", minimum=0
    ),
    ParameterSpec("queue_size", 2, "frames waiting for the worker; when full the oldest is dropped and counted (on configure)", minimum=1),
    ParameterSpec("autostart", True, "configure and activate at start-up (false: wait for lifecycle transitions)"),
    ParameterSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages (errors are also sent at once)", positive=True),
)

#: The camera input of the nodes that take images (segloc_ros.nodes.camera_input).
IMAGE_TRANSPORT_PARAMETER = ParameterSpec(
    "image_transport",
    "raw",
    "raw: subscribe 'image' (sensor_msgs/Image); compressed: 'image/compressed' (sensor_msgs/CompressedImage) (on activate)",
    choices=IMAGE_TRANSPORTS,
)

SEGMENTATION_PARAMETERS: tuple[ParameterSpec, ...] = (
    *COMMON_PARAMETERS,
    IMAGE_TRANSPORT_PARAMETER,
    ParameterSpec(
        "max_edge",
        0,
        "longest side (pixels) of the undistorted image given to the network; 0 = the map's network input size",
        minimum=0,
    ),
)

RETRIEVAL_PARAMETERS: tuple[ParameterSpec, ...] = (
    *COMMON_PARAMETERS,
    ParameterSpec("map_frame", "map", "frame of the published pose priors"),
    ParameterSpec("num_priors", 0, "pose priors published per image, best first; 0 = all the retrieved images", minimum=0),
)

#: place_recognition_node (segloc_ros.nodes.place_recognition_node): SFRS retrieval from the map's sfrs layer.
PLACE_RECOGNITION_PARAMETERS: tuple[ParameterSpec, ...] = (
    *COMMON_PARAMETERS,
    IMAGE_TRANSPORT_PARAMETER,
    ParameterSpec(
        "max_edge",
        0,
        "longest side (pixels) of the undistorted image before retrieval; 0 = the image's (the network then resizes it)",
        minimum=0,
    ),
    ParameterSpec("map_frame", "map", "frame of the published pose priors"),
    ParameterSpec("num_results", 5, "mapping images retrieved per image (segloc/retrieval)", minimum=1),
    ParameterSpec("num_priors", 0, "pose priors published per image, best first; 0 = one per retrieved image", minimum=0),
    ParameterSpec(
        "approximation",
        "weighted",
        "the first prior: weighted (similarity-weighted mean of the retrieved poses near the best one) or top1 (the best image's pose)",
        choices=APPROXIMATIONS,
    ),
)

#: What every node that publishes the robot's pose takes (pose_refinement_node, localizer_node):
#: frames, TF, odometry and the publishing decision (:class:`segloc.localize.pipeline.PublishConfig`).
LOCALIZING_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("map_frame", "map", "frame of the map (pose header, TF parent)"),
    ParameterSpec("odom_frame", "odom", "odometry frame (TF map -> odom)"),
    ParameterSpec("base_frame", "base_link", "robot base frame: the published pose is its pose in map_frame"),
    ParameterSpec("camera_frame", "", "camera optical frame for the extrinsics base_frame -> camera; '' = the images' frame_id"),
    ParameterSpec("publish_tf", True, "publish map -> odom (or map -> base_frame without odometry) on /tf"),
    ParameterSpec(
        "use_odometry",
        True,
        "true: publish map -> odom from the odometry at the image stamp; false: publish map -> base_frame",
    ),
    ParameterSpec("odom_topic", "", "nav_msgs/Odometry topic for odom -> base_frame; '' = take it from /tf"),
    ParameterSpec(
        "transform_tolerance",
        1.0,
        "seconds added to the image stamp of the published transform, as AMCL does (how long it stays valid)",
        minimum=0.0,
    ),
    ParameterSpec("max_position_std", 0.5, "largest published position standard deviation, metres (worst direction)", positive=True),
    ParameterSpec("max_yaw_std_deg", 10.0, "largest published yaw standard deviation, degrees", positive=True),
    ParameterSpec("tf_timeout", 0.2, "seconds to wait for the extrinsics and odometry at an image stamp", minimum=0.0),
    ParameterSpec("tf_buffer_duration", 10.0, "seconds of /tf (and odometry) history kept", positive=True),
    ParameterSpec(
        "lost_frames_error",
        5,
        "consecutive frames without a pose after which 'localization lost' is an ERROR (a WARN before)",
        minimum=1,
    ),
    ParameterSpec(
        "stale_timeout",
        3.0,
        "seconds (of the node's clock: /clock with use_sim_time) without a frame's verdict after which segloc/localized goes "
        "False with a WARN 'localization stale' (the camera or an upstream node stopped); 0 = never",
        minimum=0.0,
    ),
)

PRIOR_INPUTS = ("retrieval", "pose_priors")

POSE_REFINEMENT_PARAMETERS: tuple[ParameterSpec, ...] = (
    *COMMON_PARAMETERS,
    *LOCALIZING_PARAMETERS,
    ParameterSpec(
        "prior_input",
        "retrieval",
        "where the refinement starts: retrieval (segloc/retrieval from retrieval_node: the same starts and points as the "
        "one-process localizer) or pose_priors (segloc/pose_priors, geometry_msgs/PoseArray from any source) (on activate)",
        choices=PRIOR_INPUTS,
    ),
    ParameterSpec("pair_buffer_size", 10, "image stamps waiting for probabilities, camera_info and priors", minimum=1),
    ParameterSpec(
        "pair_timeout",
        2.0,
        "an image stamp still unmatched this many seconds (of stamps) behind the newest expires, counted",
        positive=True,
    ),
)

LOCALIZER_PARAMETERS: tuple[ParameterSpec, ...] = (
    *COMMON_PARAMETERS,
    *LOCALIZING_PARAMETERS,
    ParameterSpec("method", "", "the registered method to localize with; '' = the one the map was built for (on configure)"),
    IMAGE_TRANSPORT_PARAMETER,
    ParameterSpec(
        "max_edge",
        0,
        "longest side (pixels) images are shrunk to before the method sees them; 0 = what the method works at (on configure)",
        minimum=0,
    ),
)

#: map_manager (segloc_ros.nodes.map_manager_node): follows a fleet map store; it loads no map itself.
MAP_MANAGER_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("store", "", "fleet map store: a folder or an fsspec URL (s3://bucket/maps/site with s3fs) (on configure)"),
    ParameterSpec(
        "cache_dir",
        "",
        "local folder the versions are pulled into (CACHE/v000003); '' = $ROS_HOME/segloc_maps (~/.ros/segloc_maps) (on configure)",
    ),
    ParameterSpec(
        "localizer_nodes",
        LOCALIZER_NODE,
        "comma-separated names of the nodes whose map_path is set to a new version (e.g. "
        "segmentation_node,retrieval_node,pose_refinement_node for the split pipeline) (on configure)",
    ),
    ParameterSpec("poll_period", 30.0, "seconds between two looks at the store's latest version", positive=True),
    ParameterSpec("keep_versions", 2, "versions kept in cache_dir, the one in service included; older pulls are removed", minimum=1),
    ParameterSpec(
        "set_timeout",
        120.0,
        "seconds a localizer node may take to answer the map_path change (it loads the map first)",
        positive=True,
    ),
    *(spec for spec in COMMON_PARAMETERS if spec.name in ("autostart", "diagnostics_period")),
)
