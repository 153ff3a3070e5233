"""The ``segloc`` command.

::

    segloc demo                                   synthetic scene -> map -> evaluation, prints metrics
    segloc synth -o DATASET                       render a synthetic scene (dataset folder, rosbag2)
    segloc convert {bag,colmap,kapture} ... -o DATASET
    segloc dataset relight DATASET --condition dusk|night -o OUT   (low-light variant of the queries)
    segloc map build DATASET --method reference -o MAP
    segloc map info MAP
    segloc map update MAP NEW_RECORDING -o NEW_MAP     (new images added, changed points retired)
    segloc map publish MAP STORE [--gate-dataset DATASET ...]   (STORE: a folder or an fsspec URL)
    segloc map versions STORE
    segloc map pull STORE [--version N] -o DIR
    segloc map rollback STORE N
    segloc localize MAP --dataset DATASET         (or --image FILE --camera "MODEL W H params...")
    segloc evaluate MAP DATASET --method reference -o OUT
    segloc evaluate MAP --bag BAG --pose-topic /ground_truth/pose -o OUT   (every image of a rosbag2)
    segloc evaluate MAP DATASET --no-tracking -o OUT      (relocalize every query, odometry or not)

Bad input, a wrong command line included, prints one line ``segloc: error: ...`` on stderr and
exits with status 1; outputs are checked before any work (:func:`segloc.fileio.check_output`):
no command writes over one of its inputs, and ``--overwrite`` replaces only what the command
writes (a map package, a dataset folder). ``test/segloc/test_bad_inputs.py`` lists the cases.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from segloc.errors import SeglocError

logger = logging.getLogger("segloc")

#: Options that read a bag (see add_bag_read_arguments), as argparse destinations.
BAG_OPTIONS = ("image_topic", "camera_info_topic", "pose_topic", "pose_frame", "camera_frame", "every_nth", "gt_frames")


def bag_read_config_from_args(args: argparse.Namespace):
    """The :class:`segloc.data.rosbag.BagReadConfig` of the ``bag`` section of ``--config`` and the bag options.

    The options are those of :func:`add_bag_read_arguments` (plus ``--world-frame`` or
    ``--gt-frames`` where a command has them); they replace the values of the config file.
    """
    from segloc.config import config_from_dict, config_section
    from segloc.data.rosbag import BagReadConfig

    values = dict(config_section(args.config, "bag") or {})
    for key in ("image_topic", "camera_info_topic", "world_frame", "camera_frame", "every_nth"):
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    gt_frames = getattr(args, "gt_frames", None)
    if gt_frames is not None:
        if args.pose_topic is not None:
            raise SeglocError("give the ground truth as --gt-frames (TF) or --pose-topic, not both")
        values["pose_source"], values["world_frame"], values["base_frame"] = "tf", *gt_frames
    if args.pose_topic is not None:
        values["pose_source"], values["pose_topic"] = "topic", args.pose_topic
    if args.pose_frame is not None:
        values["pose_topic_frame"] = args.pose_frame
    return config_from_dict(BagReadConfig, values, "bag")


# --- commands ----------------------------------------------------------------------------


def cmd_synth(args: argparse.Namespace) -> int:
    from segloc.config import config_from_dict, config_section, config_to_dict
    from segloc.data.synthetic import CONDITIONS, SynthConfig, generate_scene, write_scene_bag

    values = dict(config_section(args.config, "synth") or {})
    base = config_to_dict(config_from_dict(SynthConfig, values, "synth"))
    for key in (
        "scene",
        "seed",
        "num_mapping",
        "num_query",
        "mapping_appearance",
        "query_appearance",
        "recording",
        "change",
        "odometry_drift",
    ):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    if args.condition is not None:
        if args.condition not in CONDITIONS:
            raise SeglocError(f"unknown condition {args.condition!r}; valid conditions are: {', '.join(CONDITIONS)}")
        base["mapping_appearance"], base["query_appearance"] = CONDITIONS[args.condition]
    if args.size is not None:
        base["width"], base["height"] = args.size
    config = config_from_dict(SynthConfig, base, "synth")
    start = time.perf_counter()
    root = generate_scene(config, args.output, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote dataset {root} in {time.perf_counter() - start:.1f} s")
    for split in args.bag:
        bag = write_scene_bag(root, root / f"{split}_bag", split=split, storage=args.bag_storage)
        print(f"wrote rosbag2 {bag}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    if args.format == "bag":
        from segloc.data.rosbag import bag_to_dataset

        config = bag_read_config_from_args(args)
        root = bag_to_dataset(
            args.source, args.output, config, query_every=args.query_every, overwrite=args.overwrite, progress=not args.no_progress
        )
    elif args.format == "colmap":
        from segloc.data.colmap import colmap_to_dataset

        if args.images is None:
            raise SeglocError("convert colmap needs --images DIR, the folder the model's image names are relative to")
        root = colmap_to_dataset(
            args.source, args.images, args.output, query_names=args.query_list if args.query_list else None, overwrite=args.overwrite
        )
    else:
        from segloc.data.kapture import kapture_to_dataset

        root = kapture_to_dataset(args.source, args.query, args.output, overwrite=args.overwrite)
    print(f"wrote dataset {root}")
    return 0


def cmd_dataset_relight(args: argparse.Namespace) -> int:
    from segloc.config import config_section
    from segloc.data.relight import relight_config, relight_dataset

    config = relight_config(args.condition, config_section(args.config, "relight"), seed=args.seed)
    start = time.perf_counter()
    root = relight_dataset(args.dataset, args.output, config, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote dataset {root} ({args.condition} queries) in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_map_build(args: argparse.Namespace) -> int:
    from segloc.config import config_section
    from segloc.data.dataset import read_dataset
    from segloc.demo import build_and_report
    from segloc.maps.package import check_map_output
    from segloc.methods import get_method

    method = get_method(args.method)
    config = method.map_config(config_section(args.config, "map"))
    dataset = read_dataset(args.dataset)
    if not dataset.mapping:
        raise SeglocError(f"{args.dataset}/mapping.txt lists no images: a map needs mapping images")
    check_map_output(args.output, args.overwrite, [*dataset.inputs(), (args.config, "the config file")])
    core = None
    if args.workers or args.scheduler:  # the shared core build (features, matching) in parallel; the map is the same
        from segloc.maps.build import build_core
        from segloc.maps.parallel import BuildExecution

        execution = BuildExecution(args.workers, args.scheduler)
        print(f"building the core (features, pair matching) on {execution.describe()}")
        core = build_core(dataset, method.core_config(config), progress=not args.no_progress, execution=execution)
    build_and_report(method, dataset, args.output, config, overwrite=args.overwrite, progress=not args.no_progress, core=core)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import torch

    from segloc.config import config_from_dict
    from segloc.evaluate.audit import AUDIT_PRESETS, AuditConfig, run_audit

    values = dict(AUDIT_PRESETS[args.preset])
    for key in ("steps", "max_edge", "time_budget_s", "max_images", "seed"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["strong"] = args.strong
    config = config_from_dict(AuditConfig, values, "audit")
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    report = run_audit(args.map, args.dataset, args.output, config, args.train_data or None, progress=not args.no_progress)
    total = report["total"]
    print(
        f"audit of {args.map} ({report['method']}, {report['variant']} attacker, {total['images']} images): "
        f"SSIM {total['ssim']:.3f}, PSNR {total['psnr']:.2f} dB, MAE {total['mae']:.3f}, perceptual {total['perceptual']:.3f} "
        f"in {time.perf_counter() - start:.0f} s; {args.output / 'audit.json'}, {args.output / 'contact_sheet.png'}"
    )
    return 0


def cmd_map_add_sfrs(args: argparse.Namespace) -> int:
    from segloc.data.dataset import read_dataset
    from segloc.maps.package import check_map_output
    from segloc.maps.sfrs import SfrsLayerConfig, add_sfrs_layer

    dataset = read_dataset(args.dataset)
    if args.output.resolve() != args.map.resolve():
        check_map_output(args.output, args.overwrite, [*dataset.inputs(), (args.map, "the map")])
    config = SfrsLayerConfig(str(args.checkpoint), args.whitening_dim, args.max_edge)
    start = time.perf_counter()
    add_sfrs_layer(args.map, dataset, config, args.output, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"wrote map {args.output} with an sfrs layer in {time.perf_counter() - start:.1f} s (use it with localize.retrieval: sfrs)")
    return 0


def cmd_map_update(args: argparse.Namespace) -> int:
    from segloc.config import config_from_dict, config_section
    from segloc.maps.update import UpdateConfig, update_map

    values = dict(config_section(args.config, "update") or {})
    if args.prefix is not None:
        values["prefix"] = args.prefix
    if args.retire_min_expected is not None:
        values["retire_min_expected"] = args.retire_min_expected
    if args.poses is not None:
        values["poses"] = args.poses
    config = config_from_dict(UpdateConfig, values, "update")
    localize = config_section(args.config, "localize")
    execution = None
    if args.workers:
        from segloc.maps.parallel import BuildExecution

        execution = BuildExecution(args.workers)
    report = update_map(
        args.map,
        args.recording,
        args.output,
        config,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        execution=execution,
        localize=localize,
    )
    registration = report.get("registration")
    if registration is not None:
        print(
            f"registered the odometry: {registration['num_localized']} of {registration['num_images']} images localized, "
            f"{registration['num_inliers']} inliers, scale {registration['global']['scale']:.4f} "
            f"(windows {registration['scale']['min']:.4f}-{registration['scale']['max']:.4f}), "
            f"median residual {registration['center_residual_m']['median']} m / {registration['rotation_residual_deg']['median']} deg"
        )
    if report.get("points_triangulated"):
        points = (
            f"{report['new_points_triangulated']} new points ({report['points_merged']} merged with old ones, "
            f"{report['points_added']} added), {report['points_retired']} old points retired, {report['num_points']} points in all"
        )
    else:
        points = "points unchanged (the method's core points are not triangulated)"
    print(f"wrote map {args.output}: {report['num_new_images']} new images, {points}, in {report['seconds']['total']:.1f} s")
    return 0


def cmd_map_info(args: argparse.Namespace) -> int:
    from segloc.config import config_section
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage
    from segloc.maps.scale import map_scale
    from segloc.methods import available_methods, get_method

    package = MapPackage.open(args.map, verify_checksums=not args.no_verify)
    package.check_contents()  # every array as the readers open it (no pickles), every JSON file
    core = read_core(package)  # the core's shapes and ids, as every localizer reads them
    manifest = package.manifest
    print(f"map {package.path}: method {package.method}, frame {package.frame_id}, format version {manifest['format_version']}")
    print(f"created: {json.dumps(manifest.get('created', {}).get('time'))} by segloc {manifest.get('created', {}).get('segloc_version')}")
    for layer, info in package.layers.items():
        print(f"  layer {layer:<12} {package.bytes([layer]):>12} bytes  {info.get('description', '')}")
    print(f"  total              {package.bytes():>12} bytes")
    print(f"scale: {map_scale(core).describe()}")
    if package.method in available_methods():
        method = get_method(package.method)
        from segloc.localize.retrieval import split_retrieval_option

        derived = method.derived_options(
            package, method.localize_config(split_retrieval_option(config_section(args.config, "localize"))[1])
        )
        if derived:
            shown = ", ".join(f"{name} {value:g}" for name, value in derived.items())
            print(f"derived localize options{' (the rest set by ' + str(args.config) + ')' if args.config else ''}: {shown}")
    print("valid: " + ("checksums match, " if not args.no_verify else "") + "every file reads")
    return 0


def cmd_map_publish(args: argparse.Namespace) -> int:
    from segloc.maps.store import MapStore

    store = MapStore(args.store)
    report = None
    if args.gate_dataset:
        from segloc.config import config_section
        from segloc.maps.gate import gate_config, validate_candidate

        config = gate_config(config_section(args.config, "gate"))
        report = validate_candidate(
            args.map,
            store,
            args.gate_dataset,
            config,
            localize_values=config_section(args.config, "localize"),
            progress=not args.no_progress,
        )
        print(report["summary"])
        if not report["accepted"]:
            raise SeglocError(f"the validation gate refused {args.map}: {report['reason']}")
        latest = store.latest()
        if latest != report["baseline_version"]:
            raise SeglocError(
                f"the latest version of {args.store} became {latest} while the gate compared with {report['baseline_version']}: "
                "publish again (the gate runs against the new latest)"
            )
    record = store.publish(args.map, validation=report)
    print(
        f"published {args.map} as version {record.version} of {args.store} (parent {record.parent}, content {record.content_hash[:12]}, {record.bytes} bytes)"
    )
    return 0


def cmd_map_versions(args: argparse.Namespace) -> int:
    from segloc.maps.store import MapStore

    store = MapStore(args.store)
    latest = store.latest()
    records = store.versions()
    if not records:
        print(f"map store {args.store}: no published version")
        return 0
    print(f"{'':2}{'version':>7} {'parent':>6}  {'created':<25} {'bytes':>10}  {'content':<12}  gate")
    for record in records:
        validation = record.validation
        gate = "-" if validation is None else ("accepted" if validation.get("accepted") else "refused")
        parent = "-" if record.parent is None else str(record.parent)
        mark = "* " if record.version == latest else "  "
        print(
            f"{mark}{record.version:>7} {parent:>6}  {record.created.get('time', '?'):<25} {record.bytes:>10}  {record.content_hash[:12]}  {gate}"
        )
    print(f"latest: version {latest} (marked *)")
    return 0


def cmd_map_pull(args: argparse.Namespace) -> int:
    from segloc.maps.store import MapStore

    store = MapStore(args.store)
    path = store.pull(args.output, version=args.version, overwrite=args.overwrite)
    print(f"pulled version {args.version if args.version is not None else store.latest()} of {args.store} into {path} (checksums match)")
    return 0


def cmd_map_rollback(args: argparse.Namespace) -> int:
    from segloc.maps.store import MapStore

    record = MapStore(args.store).rollback(args.version)
    print(f"latest of {args.store} is version {record.version} (content {record.content_hash[:12]})")
    return 0


def _parse_camera(text: str):
    from segloc.geometry.camera import Camera

    fields = text.split()
    if len(fields) < 4:
        raise SeglocError(f"--camera expects 'MODEL width height params...', got {text!r}")
    try:
        return Camera(fields[0], int(fields[1]), int(fields[2]), tuple(float(v) for v in fields[3:]))
    except ValueError as exc:
        raise SeglocError(f"--camera: malformed number ({exc})") from None


def _image_names(paths: list[Path]) -> list[str]:
    """Names of ``--image`` files in the poses file: their file names, or the paths as given when two file names are equal."""
    given = [str(p) for p in paths]
    twice = sorted({name for name in given if given.count(name) > 1})
    if twice:
        raise SeglocError(f"--image {twice[0]} is given twice: give each image once")
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = given  # equal file names in different folders: keep the folders so that the names stay unique
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise SeglocError(f"--image {name!r}: the poses file names images without white space; rename the file")
    return names


def _load_localizer(method, package, args: argparse.Namespace):
    """The method's localizer with the ``localize:`` options of ``--config`` (``retrieval`` included) and ``--backend``, ``--threads``, ``--device``."""
    from segloc.config import config_section
    from segloc.localize.retrieval import load_localizer

    return load_localizer(method, package, config_section(args.config, "localize"), args.device, args.backend, args.threads)


def cmd_localize(args: argparse.Namespace) -> int:
    from segloc.data.dataset import ImageRecord, format_image_line, load_image, read_dataset
    from segloc.fileio import check_output
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    if args.dataset is None and not args.image:
        raise SeglocError("give --dataset DATASET or --image FILE... with --camera")
    if args.image and args.camera is None:
        raise SeglocError("--image needs --camera 'MODEL width height params...'")
    if args.output is not None:
        inputs = [(args.map, "the map"), (args.dataset, "the dataset folder"), (args.config, "the config file")]
        inputs += [(path, "an input image") for path in args.image or []]
        check_output(args.output, "file", inputs=inputs, what="poses file")
    package = MapPackage.open(args.map)
    method = get_method(args.method or package.method)
    localizer = _load_localizer(method, package, args)
    jobs = []  # (name in the poses file, name in messages, image loader, camera)
    if args.dataset is not None:
        dataset = read_dataset(args.dataset)
        records = dataset.query if args.split == "query" else dataset.mapping
        if args.images:
            wanted = set(args.images)
            records = [r for r in records if r.name in wanted]
            missing = wanted - {r.name for r in records}
            if missing:
                raise SeglocError(f"images not in {args.split}.txt: {', '.join(sorted(missing))}")
        jobs = [(r.name, r.name, (lambda n=r.name: dataset.load_image(n)), r.camera) for r in records]
    else:
        camera = _parse_camera(args.camera)
        jobs = [(name, str(p), (lambda p=p: load_image(p)), camera) for name, p in zip(_image_names(args.image), args.image)]
    lines, failures = [], 0
    for name, shown, load, camera in jobs:
        image = load()
        if image.shape[:2] != (camera.height, camera.width):
            raise SeglocError(f"{shown}: image is {image.shape[1]}x{image.shape[0]} but the camera is {camera.width}x{camera.height}")
        result = localizer.localize(image, camera)
        total = sum(result.timings.values())
        if result.success:
            lines.append(format_image_line(ImageRecord(name, result.cam_from_world, camera)))
            print(f"{shown}: localized with {result.num_inliers} inliers in {total:.2f} s")
        else:
            failures += 1
            print(f"{shown}: FAILED ({result.info.get('failure_reason', 'no pose')}) in {total:.2f} s")
    if args.output is not None:
        from segloc.fileio import atomic_write

        text = "# estimated poses, dataset line format (cam_from_world, quaternion w x y z)\n" + "".join(f"{l}\n" for l in lines)
        atomic_write(args.output, lambda tmp: tmp.write_text(text))
        print(f"wrote {len(lines)} poses to {args.output}")
    print(f"localized {len(jobs) - failures} of {len(jobs)} images")
    return 0


def _evaluate_retrieval_only(args: argparse.Namespace, package) -> int:
    """``segloc evaluate MAP DATASET --retrieval-only``: recall@1/5/10 of the map's sfrs layer."""
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.retrieval import evaluate_retrieval

    if args.dataset is None:
        raise SeglocError("--retrieval-only evaluates a DATASET's queries; it does not read bags")
    dataset = read_dataset(args.dataset, require_query=True)
    metrics = evaluate_retrieval(
        package, dataset, args.output, args.retrieval_distance, args.retrieval_angle, progress=not args.no_progress, limit=args.limit
    )
    recalls = ", ".join(f"{k} {100 * v:.0f}%" for k, v in metrics["recall"].items())
    thresholds = metrics["thresholds"]
    print(
        f"sfrs retrieval, {metrics['num_queries']} queries (within {thresholds['max_distance_m']:.2f} m, {thresholds['max_angle_deg']:g} deg): {recalls}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segloc.config import config_from_dict, config_section
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.replay import MapSummary, evaluate_bag, read_bag_odometry
    from segloc.evaluate.report import format_summary
    from segloc.evaluate.run import evaluate_localizer, read_query_odometry
    from segloc.fileio import check_output
    from segloc.localize.pipeline import LocalizationPipeline
    from segloc.localize.tracking import TrackingConfig
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    bag = getattr(args, "bag", None)
    if args.dataset is not None and bag is not None:
        raise SeglocError("give a DATASET folder or --bag BAG, not both")
    if args.dataset is None and bag is None:
        raise SeglocError("give a DATASET folder, or --bag BAG to evaluate on the images of a rosbag2")
    bag_options = [f"--{key.replace('_', '-')}" for key in BAG_OPTIONS if getattr(args, key, None) is not None]
    if bag is None and bag_options:
        raise SeglocError(f"{', '.join(bag_options)}: bag options, they need --bag BAG")
    inputs = [(args.map, "the map"), (args.dataset, "the dataset folder"), (bag, "the bag"), (args.config, "the config file")]
    check_output(args.output, "folder", inputs=inputs, what="report folder")
    package = MapPackage.open(args.map)
    if args.retrieval_only:
        return _evaluate_retrieval_only(args, package)
    method = get_method(args.method or package.method)
    bag_config = bag_read_config_from_args(args) if bag is not None else None
    dataset = read_dataset(args.dataset, require_query=True) if args.dataset is not None else None
    localizer = _load_localizer(method, package, args)
    tracking = config_from_dict(TrackingConfig, config_section(args.config, "tracking"), "tracking")
    if args.no_tracking:
        tracking.enabled = False
    pipeline = LocalizationPipeline(localizer, prior_use=method.prior_use, tracks=method.tracks, tracking_config=tracking)
    odometry = None
    if pipeline.tracking.enabled and dataset is not None:
        odometry = read_query_odometry(args.dataset)
    elif pipeline.tracking.enabled:
        try:
            odometry = read_bag_odometry(bag, bag_config)
        except SeglocError as exc:
            logger.warning("no tracking: %s", exc)
    map_summary = MapSummary.from_package(package)
    if dataset is None:
        metrics = evaluate_bag(
            pipeline,
            bag,
            args.output,
            bag_config,
            map_summary=map_summary,
            progress=not args.no_progress,
            limit=args.limit,
            extra={"method": method.name},
            odometry=odometry,
        )
    else:
        metrics = evaluate_localizer(
            pipeline,
            dataset,
            args.output,
            map_bytes=map_summary.bytes,
            map_points3D=map_summary.points3D,
            mapping_centers=map_summary.mapping_centers,
            progress=not args.no_progress,
            limit=args.limit,
            map_path=map_summary.path,
            extra={"method": method.name},
            odometry=odometry,
        )
    print(format_summary(metrics))
    if "tracking" in metrics:
        print("tracking: " + ", ".join(f"{key} {value}" for key, value in metrics["tracking"].items()))
    print(f"wrote {args.output}/metrics.json and plots")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """synth -> networks -> maps -> evaluation on the embedded default scene, compared side by side (:mod:`segloc.demo`)."""
    from segloc.demo import DemoOptions, run_demo

    methods = [name.strip() for name in args.method.split(",") if name.strip()]
    run_demo(
        DemoOptions(
            output=args.output,
            methods=methods,
            scene=args.scene,
            seed=args.seed,
            size=tuple(args.size),
            condition=args.condition,
            checkpoint=args.checkpoint,
            train=args.train,
            train_epochs=args.train_epochs,
            limit=args.limit,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """ONNX export of a map's or a checkpoint's networks, checked against torch; with tensorrt, the engine built into the cache."""
    import tempfile

    from segloc.data.dataset import load_image
    from segloc.fileio import check_output
    from segloc.maps.package import MapPackage, is_map_package
    from segloc.methods import get_method
    from segloc.models.checkpoint import load_checkpoint, read_checkpoint_info
    from segloc.models.export import add_onnx_layer, export_network, network_graph, network_session
    from segloc.runtime.session import RuntimeConfig, resolve_backend

    device = args.device or ("cuda" if args.backend == "tensorrt" else "cpu")
    runtime = RuntimeConfig(
        args.backend, args.threads, "fp16" if args.fp16 else "fp32", cache_dir=str(args.cache_dir) if args.cache_dir else None
    )
    resolve_backend(args.backend, device)  # tensorrt without the package or a GPU: say so before the export
    package = MapPackage.open(args.source) if is_map_package(args.source) else None
    if package is not None:
        from segloc.maps.sfrs import sfrs_networks

        networks = {**get_method(package.method).networks(package), **sfrs_networks(package)}
        if not networks:
            raise SeglocError(f"map {args.source} ({package.method}) runs no network: nothing to export")
    else:
        model = load_checkpoint(args.source)
        trained = read_checkpoint_info(args.source).metadata.get("image_size")
        networks = {"network": (model, tuple(trained) if trained else (640, 480))}
        if args.output is None:
            raise SeglocError(f"{args.source} is a checkpoint: give -o FILE.onnx (only a map can hold its export)")
    if args.output is not None:
        if len(networks) > 1:
            raise SeglocError(f"the map runs {len(networks)} networks: export them into the map (no -o)")
        check_output(
            args.output, "file", inputs=[(args.source, "the map or checkpoint"), (args.check_image, "the check image")], what="ONNX file"
        )
    image = load_image(args.check_image) if args.check_image is not None else None
    for name, (model, size) in networks.items():
        size = tuple(args.size or size)
        with tempfile.TemporaryDirectory() as scratch:
            onnx_path = export_network(model, args.output or Path(scratch) / f"{name}.onnx", size)
            spec = network_graph(model)
            where = (
                "descriptors (N dynamic)"
                if spec.vector_dim
                else f"{size[0]}x{size[1]} ({'dynamic H, W' if spec.dynamic else 'this size only'})"
            )
            print(f"{name}: exported {onnx_path} at {where}, outputs checked against torch")
            if image is not None and spec.vector_dim is None:
                print(f"{name}: {args.check_image}: {_backend_difference(model, onnx_path, image, size, runtime, device)}")
            if args.backend == "tensorrt":
                session = network_session(model, runtime, device, onnx_path, size)
                if session.status.level != "ok":
                    raise SeglocError(session.status.message)
                print(f"{name}: {session.status.message} (cache {runtime.cache_path / 'engines'})")
            if package is not None and args.output is None:
                stored = add_onnx_layer(package.path, model, onnx_path, size)
                print(f"{name}: stored in the map as {stored.relative_to(package.path)} (with its checksum)")
                package = MapPackage.open(package.path)
    return 0


def _backend_difference(model, onnx_path: Path, image, size: tuple[int, int], runtime, device: str) -> str:
    """The largest difference of the network's outputs between torch and ``runtime``'s backend on one real image, at ``size``."""
    import cv2
    import torch

    from segloc.models.export import network_graph, network_session
    from segloc.models.segmenter import inference_size
    from segloc.runtime.onnx import max_abs_difference
    from segloc.runtime.session import RuntimeConfig

    if network_graph(model).dynamic:
        size = inference_size(image.shape[1], image.shape[0], max(size))
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    batch = torch.from_numpy(resized).permute(2, 0, 1)[None].float().div(255.0)
    reference = network_session(model, RuntimeConfig("torch"), device, onnx_path, size).run({"image": batch})
    got = network_session(model, runtime, device, onnx_path, size).run({"image": batch})
    worst = max(max_abs_difference(reference, got).values())
    return f"max abs difference of the outputs, {size[0]}x{size[1]}, torch vs {runtime.backend}: {worst:.2e}"


# --- parser ------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return width, height


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the CLI's error convention: one line ``segloc: error: ...`` on stderr, exit status 1."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(1, f"segloc: error: {' '.join(message.split())} (see '{self.prog} --help')\n")


def add_bag_read_arguments(p: argparse.ArgumentParser, prefix: str) -> None:
    """The options that pick a bag's image, camera_info and ground-truth topics (see :func:`bag_read_config_from_args`)."""
    p.add_argument("--image-topic", help=f"{prefix}image topic (default: the only image topic)")
    p.add_argument("--camera-info-topic", help=f"{prefix}camera_info topic (default: the only one)")
    p.add_argument(
        "--pose-topic",
        help=f"{prefix}read ground-truth poses from this topic (PoseStamped, PoseWithCovarianceStamped, Odometry, TransformStamped) instead of /tf",
    )
    p.add_argument(
        "--pose-frame",
        choices=["base", "camera"],
        help=f"{prefix}the pose topic gives the robot base (default; extrinsics from /tf_static) or the camera",
    )
    p.add_argument("--camera-frame", help=f"{prefix}camera frame (default: the image header's frame_id)")
    p.add_argument("--every-nth", type=int, help=f"{prefix}keep every N-th image")


def build_parser() -> argparse.ArgumentParser:
    from segloc import __version__
    from segloc.data.relight import RELIGHT_PRESETS
    from segloc.data.synthetic import APPEARANCE_PRESETS, CONDITIONS, MIN_IMAGE_SIZE, SCENES
    from segloc.demo import DEFAULT_DEMO_METHODS, DEFAULT_DEMO_OUTPUT, DEMO_SIZE
    from segloc.methods import available_methods
    from segloc.runtime.session import BACKEND_CHOICES

    conditions = ", ".join(CONDITIONS)
    presets = ", ".join(APPEARANCE_PRESETS)
    parser = ArgumentParser(prog="segloc", description="Privacy-preserving visual localization: maps, localization, evaluation.")
    parser.add_argument("--version", action="version", version=f"segloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def runtime_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--backend",
            choices=BACKEND_CHOICES,
            help="inference backend of the method's networks (default: the config's runtime.backend, torch); "
            "auto: tensorrt, else onnxruntime, else torch",
        )
        p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: the config's; 0: its default)")
        p.add_argument("--device", help="torch device of the networks: cpu, cuda, cuda:N (default: the config's)")

    def common(p: argparse.ArgumentParser, progress: bool = True) -> None:
        if progress:
            p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = commands.add_parser(
        "demo",
        help="render the default synthetic scene, get the networks, build maps, evaluate them side by side (the README's first command)",
    )
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_DEMO_OUTPUT, help=f"output folder (default {DEFAULT_DEMO_OUTPUT})")
    p.add_argument(
        "--method",
        default=",".join(DEFAULT_DEMO_METHODS),
        help=f"methods to compare, comma-separated, of: {', '.join(available_methods())} (default {','.join(DEFAULT_DEMO_METHODS)}: "
        "SegLoc's pose approximation and refinement, the reference SIFT localizer, and SLD*'s landmarks)",
    )
    p.add_argument("--scene", default="room", help=f"synthetic scene: {', '.join(SCENES)} (default room)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size", type=_size, default=DEMO_SIZE, help=f"image size (default {DEMO_SIZE[0]}x{DEMO_SIZE[1]}, the shipped network's)"
    )
    p.add_argument(
        "--condition",
        default="lighting",
        help=f"mapping/query imaging conditions: {conditions} (default lighting)",
    )
    network = p.add_mutually_exclusive_group()
    network.add_argument("--checkpoint", type=Path, help="SegLoc network to use instead of the shipped one")
    network.add_argument(
        "--train", action="store_true", help="train the SegLoc network on the mapping images first (~15-25 min on 2 cores)"
    )
    p.add_argument("--train-epochs", type=int, default=10, help="epochs with --train (default 10, the cpu_demo preset)")
    p.add_argument("--limit", type=int, help="only the first N queries")
    p.add_argument("--overwrite", action="store_true", help="render the scene again even if it exists")
    common(p)
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("synth", help="render a synthetic scene into a dataset folder (and rosbag2)")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--config", type=Path, help="YAML file with a 'synth' section")
    p.add_argument("--scene", help=f"one of: {', '.join(SCENES)}")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-mapping", type=int, help="number of mapping images")
    p.add_argument("--num-query", type=int, help="number of query images")
    p.add_argument(
        "--size", type=_size, help=f"image size WIDTHxHEIGHT (default 640x480, at least {MIN_IMAGE_SIZE[0]}x{MIN_IMAGE_SIZE[1]})"
    )
    p.add_argument("--condition", help=f"mapping/query imaging conditions: {conditions}")
    p.add_argument("--mapping-appearance", help=f"imaging condition of the mapping images: {presets}")
    p.add_argument("--query-appearance", help="imaging condition of the query images (same presets)")
    p.add_argument("--recording", type=int, help="a later recording of the place: other trajectories, N days later (default 0)")
    p.add_argument(
        "--change", type=float, help="share of the place changed since recording 0: walls repainted, posters replaced, furniture moved"
    )
    p.add_argument(
        "--odometry-drift",
        type=float,
        metavar="DEG_PER_M",
        help="write the mapping poses as drifting monocular odometry (random frame and scale; heading drift DEG_PER_M deg/m, "
        "scale drift DEG_PER_M %%/m); the true ones go to mapping_groundtruth.txt",
    )
    p.add_argument(
        "--bag", action="append", default=[], choices=["mapping", "query"], help="also write a rosbag2 of this split (repeatable)"
    )
    p.add_argument("--bag-storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--overwrite", action="store_true", help="replace the dataset folder if it exists (only a dataset folder)")
    common(p)
    p.set_defaults(func=cmd_synth)

    p = commands.add_parser("convert", help="convert a rosbag, COLMAP model or kapture folder into a dataset folder")
    p.add_argument("format", choices=["bag", "colmap", "kapture"])
    p.add_argument("source", type=Path, help="bag path, COLMAP model folder, or kapture mapping folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--images", type=Path, help="colmap: the image folder")
    p.add_argument("--query-list", type=Path, help="colmap: file whose first column names the query images")
    p.add_argument("--query", type=Path, help="kapture: the query kapture folder")
    add_bag_read_arguments(p, "bag: ")
    p.add_argument("--world-frame", help="bag: map frame for /tf lookups (default map)")
    p.add_argument(
        "--query-every",
        type=int,
        default=5,
        help="bag: every N-th kept frame becomes a query, the others mapping images (default 5; 1 = all queries)",
    )
    p.add_argument("--config", type=Path, help="YAML config with a 'bag' section (BagReadConfig options)")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset folder if it exists (only a dataset folder)")
    common(p)
    p.set_defaults(func=cmd_convert)

    datasets = commands.add_parser("dataset", help="derive dataset folders from others").add_subparsers(
        dest="dataset_command", required=True, metavar="ACTION"
    )
    p = datasets.add_parser(
        "relight",
        help="copy a dataset with its query photographs turned to dusk or night (linear light, exposure, colour cast, "
        "sensor noise, blur); mapping images and poses unchanged",
    )
    p.add_argument("dataset", type=Path, help="dataset folder to read (never modified)")
    p.add_argument("--condition", required=True, choices=list(RELIGHT_PRESETS), help="low-light condition of the queries")
    p.add_argument("-o", "--output", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--seed", type=int, help="seed of the sensor noise (default 0, or the config's)")
    p.add_argument("--config", type=Path, help="YAML file with a 'relight' section (RelightConfig options overriding the preset)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it is a dataset folder")
    common(p)
    p.set_defaults(func=cmd_dataset_relight)

    maps = commands.add_parser("map", help="build and inspect map packages").add_subparsers(
        dest="map_command", required=True, metavar="ACTION"
    )
    p = maps.add_parser("build", help="build a map package from a dataset folder's mapping images")
    p.add_argument("dataset", type=Path)
    p.add_argument("--method", default="reference", help=f"method whose map to build: {', '.join(available_methods())} (default reference)")
    p.add_argument("-o", "--output", type=Path, required=True, help="map folder to write")
    p.add_argument("--config", type=Path, help="YAML config with a 'map' section")
    p.add_argument("--overwrite", action="store_true", help="replace the map if it exists (only a map package)")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="extract features and match pairs on a local Dask cluster of N processes (0: serially; the map is the same)",
    )
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786) to build on instead (dask.distributed)")
    common(p)
    p.set_defaults(func=cmd_map_build)
    p = maps.add_parser("add-sfrs", help="write a copy of a map with an sfrs retrieval layer (NetVLAD of the mapping images)")
    p.add_argument("map", type=Path)
    p.add_argument("dataset", type=Path, help="the dataset the map was built from")
    p.add_argument("--checkpoint", type=Path, required=True, help="a netvlad checkpoint (segloc train sfrs: RUN/generation_G/checkpoint)")
    p.add_argument("--whitening-dim", type=int, default=0, help="PCA-whitening dimension learnt on the mapping images (0: none)")
    p.add_argument("--max-edge", type=int, help="network input size (default: the checkpoint's training size)")
    p.add_argument("-o", "--output", type=Path, required=True, help="map folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the output map if it exists (only a map package)")
    common(p)
    p.set_defaults(func=cmd_map_add_sfrs)
    p = maps.add_parser(
        "update",
        help="write a new map: MAP plus a new recording's mapping images (new points triangulated, changed ones retired, "
        "every layer brought up to date), faster than a rebuild",
    )
    p.add_argument("map", type=Path, help="the current map (read only)")
    p.add_argument(
        "recording", type=Path, help="dataset folder of the new recording: mapping images with poses in the map's frame (or odometry)"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the new map folder (not MAP)")
    p.add_argument(
        "--config",
        type=Path,
        help="YAML file with an 'update' section (segloc.maps.update.UpdateConfig; update.register: the registration's options) "
        "and a 'localize' one (the localizer that registers odometry poses)",
    )
    p.add_argument(
        "--poses",
        choices=["map", "odometry"],
        help="the recording's mapping poses: in the map's frame (map, the default) or odometry, registered to the map by "
        "localizing the images and fitting a (windowed) Sim(3)",
    )
    p.add_argument("--prefix", help="prefix of the new images' names in the map (default updateN/)")
    p.add_argument(
        "--retire-min-expected", type=int, help="retire an old point expected in this many new images and matched in none (0: never)"
    )
    p.add_argument("--workers", type=int, default=0, help="extract and match the new images on a local Dask cluster of N processes")
    p.add_argument("--overwrite", action="store_true", help="replace the output map if it exists (only a map package)")
    common(p)
    p.set_defaults(func=cmd_map_update)
    p = maps.add_parser("info", help="validate a map and print its layers, sizes, scale and the localize options derived from it")
    p.add_argument("map", type=Path)
    p.add_argument("--no-verify", action="store_true", help="skip the checksum verification")
    p.add_argument("--config", type=Path, help="YAML file whose 'localize' options are set (the rest are derived from the map)")
    p.set_defaults(func=cmd_map_info)
    store_help = "map store: a folder, or an fsspec URL (memory://..., s3://bucket/path with s3fs)"
    p = maps.add_parser(
        "publish",
        help="publish a map as the next version of a map store (after the validation gate, with --gate-dataset) and make it the latest",
    )
    p.add_argument("map", type=Path)
    p.add_argument("store", help=store_help)
    p.add_argument(
        "--gate-dataset",
        type=Path,
        action="append",
        default=[],
        help="dataset folder whose queries the map must localize at least as well as the store's latest (repeatable: the "
        "newest recording and earlier ones); without it the version is published with no validation report",
    )
    p.add_argument("--config", type=Path, help="YAML file with a 'gate' section (GateConfig) and a 'localize' section")
    common(p)
    p.set_defaults(func=cmd_map_publish)
    p = maps.add_parser("versions", help="list the versions of a map store")
    p.add_argument("store", help=store_help)
    p.set_defaults(func=cmd_map_versions)
    p = maps.add_parser("pull", help="download a version of a map store into a map folder (checksums checked, renamed into place)")
    p.add_argument("store", help=store_help)
    p.add_argument("--version", type=int, help="version number (default: the latest)")
    p.add_argument("-o", "--output", type=Path, required=True, help="map folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace the map if it exists (only a map package)")
    p.set_defaults(func=cmd_map_pull)
    p = maps.add_parser("rollback", help="make a published version the latest again")
    p.add_argument("store", help=store_help)
    p.add_argument("version", type=int)
    p.set_defaults(func=cmd_map_rollback)

    p = commands.add_parser(
        "export",
        help="export a map's (or a checkpoint's) networks to ONNX, checked against torch; store it in the map; build TensorRT engines",
    )
    p.add_argument("source", type=Path, help="a map package (its networks; the ONNX goes into its 'onnx' layer) or a checkpoint folder")
    p.add_argument(
        "--backend", choices=["onnxruntime", "tensorrt"], default="onnxruntime", help="tensorrt also builds the engine into the cache"
    )
    precision = p.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16", dest="fp16", action="store_true", default=True, help="TensorRT fp16 engine (default, where the GPU supports it)"
    )
    precision.add_argument("--fp32", dest="fp16", action="store_false", help="TensorRT fp32 engine")
    p.add_argument("-o", "--output", type=Path, help="write the ONNX file here instead of into the map (required for a checkpoint)")
    p.add_argument(
        "--size", type=_size, help="WIDTHxHEIGHT of the check input and TensorRT's optimum (default: the map's largest query size)"
    )
    p.add_argument("--check-image", type=Path, help="a real image: print the largest output difference between torch and the backend on it")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda for tensorrt, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--cache-dir", type=Path, help="engine cache (default $SEGLOC_CACHE or ~/.cache/segloc)")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "audit", help="privacy audit: train an inversion attacker on other places and measure how much of the mapping images it recovers"
    )
    p.add_argument("map", type=Path)
    p.add_argument("dataset", type=Path, help="the dataset folder the map was built from (its mapping images are scored)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder (audit.json, contact_sheet.png, attacker/)")
    p.add_argument(
        "--train-data",
        type=Path,
        action="append",
        help=(
            "dataset folder of another place (repeatable): with depth maps (synthetic scenes), or posed images that are "
            "triangulated with the map's core options (e.g. ../shared/data/strecha_fountain); default: synthetic scenes "
            "rendered into OUTPUT"
        ),
    )
    p.add_argument("--strong", action="store_true", help="stronger attacker: also train on the audited dataset's query images")
    p.add_argument("--preset", default="cpu", choices=["cpu", "full"], help="attacker size and training length (default cpu: minutes)")
    p.add_argument("--steps", type=int, help="training steps (replaces the preset's)")
    p.add_argument("--max-edge", type=int, help="longer side of the attacker's images (replaces the preset's)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float, help="stop training after this many seconds")
    p.add_argument("--max-images", type=int, help="score at most this many mapping images")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    common(p)
    p.set_defaults(func=cmd_audit)

    p = commands.add_parser("localize", help="localize images against a map")
    p.add_argument("map", type=Path)
    p.add_argument("--method", help="method (default: the map's)")
    p.add_argument("--dataset", type=Path, help="dataset folder whose images to localize")
    p.add_argument("--split", default="query", choices=["query", "mapping"])
    p.add_argument("--images", nargs="+", help="with --dataset: only these image names")
    p.add_argument("--image", type=Path, nargs="+", help="image files (with --camera)")
    p.add_argument("--camera", help="'MODEL width height params...' for --image, e.g. 'PINHOLE 640 480 500 500 320 240'")
    p.add_argument("--config", type=Path, help="YAML config with a 'localize' section")
    runtime_options(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the poses in the dataset line format (with --image, named by file name, or by the path given when two "
        "file names are equal)",
    )
    p.set_defaults(func=cmd_localize)

    p = commands.add_parser(
        "evaluate", help="localize a dataset's queries (or a rosbag2's images, --bag) and report accuracy, timing and map size"
    )
    p.add_argument("map", type=Path)
    p.add_argument("dataset", type=Path, nargs="?", help="dataset folder whose queries to localize (not with --bag)")
    p.add_argument("--bag", type=Path, help="evaluate on every image of this rosbag2 (sqlite3 or mcap) that has a ground-truth pose")
    p.add_argument("--method", help="method (default: the map's)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for metrics.json, trajectories and plots")
    p.add_argument("--config", type=Path, help="YAML config with a 'localize' section (and a 'bag' section for --bag)")
    p.add_argument("--limit", type=int, help="only the first N queries")
    runtime_options(p)
    p.add_argument("--retrieval-only", action="store_true", help="recall@1/5/10 of the map's sfrs retrieval layer (no localization)")
    p.add_argument("--retrieval-distance", type=float, help="metres: a retrieved image within it sees the place (default 6 image spacings)")
    p.add_argument("--retrieval-angle", type=float, default=30.0, help="degrees between optical axes for a retrieved image to count")
    p.add_argument(
        "--no-tracking",
        action="store_true",
        help="relocalize every query; by default a method that tracks refines from the pose the query sequence's odometry "
        "predicts (a synthetic scene's scene.json, a bag's TF odom -> base_link) and relocalizes when that fails",
    )
    add_bag_read_arguments(p, "with --bag: ")
    p.add_argument(
        "--gt-frames",
        nargs=2,
        metavar=("WORLD", "BASE"),
        help="with --bag: ground truth from the TF data (default source, frames map base_link): "
        "WORLD -> camera frame, through BASE when the extrinsics come from the config",
    )
    common(p)
    p.set_defaults(func=cmd_evaluate)
    _add_plugin_commands(commands)
    return parser


def _add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """Commands that packages above the library contribute (``segloc train`` from segloc_train).

    They are found through the ``segloc.commands`` entry-point group (a function taking the
    subparsers), so the library never imports the packages that build on it.
    """
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group="segloc.commands"), key=lambda e: e.name):
        try:
            add_parser = entry.load()
        except ImportError as exc:
            logger.debug("segloc command %s is unavailable: %s", entry.name, exc)
            continue
        add_parser(commands)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except SeglocError as exc:
        print(f"segloc: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("segloc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
