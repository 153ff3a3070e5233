"""The segloc_ros nodes: SegLoc localization split into three lifecycle nodes.

::

    image, camera_info ─▶ segmentation_node ─┬─ segloc/descriptor ─▶ retrieval_node ─ segloc/pose_priors ─┐
                                             ├─ segloc/probabilities, segloc/camera_info ──────────────────┤
                                             └─ segloc/labels                                              ▼
    /tf, /tf_static, initialpose (, odom_topic) ─────────────────────────────────────▶ pose_refinement_node
                                                            ─▶ pose, /tf (map -> odom), segloc/localized

- :mod:`segloc_ros.nodes.segmentation_node`: undistorts and shrinks camera images and runs the
  segmentation network embedded in the map;
- :mod:`segloc_ros.nodes.retrieval_node`: pose priors from the mapping images with the most
  similar global descriptors;
- :mod:`segloc_ros.nodes.pose_refinement_node`: label-based pose refinement from the priors (or
  ``initialpose``), the base pose with covariance, ``map -> odom``, and the failure signal;
- :mod:`segloc_ros.composition`: the three in one process (``localization_container``).

Shared pieces: :mod:`~segloc_ros.nodes.common` (the lifecycle base: parameters, diagnostics,
the worker, map loading and atomic reload, ``run_nodes``), :mod:`~segloc_ros.nodes.params`
(every parameter with its default and description, without ROS) and
:mod:`~segloc_ros.nodes.buffers` (worker queue, stamp matching, TF cache; without ROS).

Importing this package does not import rclpy; the node modules do.

The SLD landmark node (to come)
-------------------------------
SLD / SLD* (scene landmark detection) localizes from network weights only: a scene-agnostic
backbone and a per-scene head predict landmark heatmaps, whose peaks give 2D-3D matches for PnP
+ RANSAC. It will be ``segloc_ros.nodes.landmark_node`` (executable ``landmark_node``), built
like the nodes here:

- a :class:`~segloc_ros.nodes.common.SeglocNode` subclass with ``needs_network = True`` that
  overrides :meth:`~segloc_ros.nodes.common.SeglocNode.load_map` to load the SLD layer of the
  map package (the SegLoc-specific :func:`~segloc_ros.nodes.common.load_localizer` does not
  apply); its parameters go into :mod:`~segloc_ros.nodes.params` (and ``config/segloc_ros.yaml``);
- inputs ``image`` / ``camera_info`` through :class:`segloc.localize.ingest.CameraIngest` as
  segmentation_node does, and the TF inputs of pose_refinement_node;
- outputs ``pose``, ``/tf`` and ``segloc/localized`` with the same frames, stamps, confidence
  check and "localization lost" diagnostics as pose_refinement_node (that logic should then move
  from pose_refinement_node into a shared helper rather than be copied), so that either
  localizer can drive the robot; optionally ``segloc/pose_priors`` to seed the SegLoc refinement.
"""
