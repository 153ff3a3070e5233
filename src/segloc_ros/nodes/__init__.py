"""The segloc_ros nodes: one node for any registered method, and SegLoc split into three.

``localizer_node`` (:mod:`segloc_ros.nodes.localizer_node`) runs the whole pipeline of the method
a map was built for (SegLoc, the SIFT reference, any plug-in) in one process: camera ingest,
the method's localizer, the publishing decision (:mod:`segloc.localize.pipeline`), the same
code the evaluator runs.

SegLoc's split deployment runs the same stages in three processes::

    image, camera_info ─▶ segmentation_node ─┬─ segloc/descriptor ─▶ retrieval_node ─ segloc/retrieval ───┐
                                             ├─ segloc/probabilities, segloc/camera_info ──────────────────┤
                                             └─ segloc/labels                (and segloc/pose_priors)      ▼
    /tf, /tf_static, initialpose (, odom_topic) ─────────────────────────────────────▶ pose_refinement_node
                                                            ─▶ pose, /tf (map -> odom), segloc/localized

- :mod:`segloc_ros.nodes.segmentation_node`: undistorts and shrinks camera images and runs the
  segmentation network embedded in the map;
- :mod:`segloc_ros.nodes.retrieval_node`: the most similar mapping images (and pose priors);
- :mod:`segloc_ros.nodes.pose_refinement_node`: label-based pose refinement from the retrieval
  (or pose priors, or ``initialpose``), then the publishing decision;
- :mod:`segloc_ros.composition`: the three in one process (``localization_container``).

Shared pieces: :mod:`~segloc_ros.nodes.common` (the lifecycle base: parameters, diagnostics,
the worker, map loading and atomic reload, ``run_nodes``), :mod:`~segloc_ros.nodes.localizing`
(the base of the nodes that publish the pose: TF, odometry, initialpose, outputs),
:mod:`~segloc_ros.nodes.camera_input` (image and camera_info subscriptions),
:mod:`~segloc_ros.nodes.segloc_split` (the split nodes' SegLoc localizer),
:mod:`~segloc_ros.nodes.params` (every parameter with its default and description, without ROS)
and :mod:`~segloc_ros.nodes.buffers` (worker queue, stamp matching, TF cache; without ROS).

Importing this package does not import rclpy; the node modules do.
"""
