"""The ``segloc`` command.

::

    segloc demo                                   synthetic scene -> map -> evaluation, prints metrics
    segloc synth -o DATASET                       render a synthetic scene (dataset folder, rosbag2)
    segloc convert {bag,colmap,kapture} ... -o DATASET
    segloc map build DATASET --method reference -o MAP
    segloc map info MAP
    segloc localize MAP --dataset DATASET         (or --image FILE --camera "MODEL W H params...")
    segloc evaluate MAP DATASET --method reference -o OUT
    segloc evaluate MAP --bag BAG --pose-topic /ground_truth/pose -o OUT   (every image of a rosbag2)

Bad input prints one line ``segloc: error: ...`` on stderr and exits with status 1.
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

DEFAULT_DEMO_OUTPUT = Path("outputs/demo")
CONFIG_SECTIONS = ("map", "localize", "synth", "bag", "train")
#: Options that read a bag (see add_bag_read_arguments), as argparse destinations.
BAG_OPTIONS = ("image_topic", "camera_info_topic", "pose_topic", "pose_frame", "camera_frame", "every_nth", "gt_frames")


def _config_section(path: Path | None, section: str) -> dict | None:
    """The ``section`` of a YAML config file (``map`` or ``localize``), or None without a file."""
    if path is None:
        return None
    import yaml

    if not path.is_file():
        raise SeglocError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SeglocError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise SeglocError(f"config file {path}: expected a mapping with sections such as 'map' and 'localize'")
    unknown = sorted(set(values) - set(CONFIG_SECTIONS))
    if unknown:
        raise SeglocError(f"config file {path}: unknown section(s) {', '.join(unknown)}; valid sections: {', '.join(CONFIG_SECTIONS)}")
    return values.get(section)


def bag_read_config_from_args(args: argparse.Namespace):
    """The :class:`segloc.data.rosbag.BagReadConfig` of the ``bag`` section of ``--config`` and the bag options.

    The options are those of :func:`add_bag_read_arguments` (plus ``--world-frame`` or
    ``--gt-frames`` where a command has them); they replace the values of the config file.
    """
    from segloc.config import config_from_dict
    from segloc.data.rosbag import BagReadConfig

    values = dict(_config_section(args.config, "bag") or {})
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
    from segloc.config import config_from_dict, config_to_dict
    from segloc.data.synthetic import CONDITIONS, SynthConfig, generate_scene, write_scene_bag

    values = dict(_config_section(args.config, "synth") or {})
    base = config_to_dict(config_from_dict(SynthConfig, values, "synth"))
    for key in ("scene", "seed", "num_mapping", "num_query", "mapping_appearance", "query_appearance"):
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
        root = bag_to_dataset(args.source, args.output, config, query_every=args.query_every, overwrite=args.overwrite)
    elif args.format == "colmap":
        from segloc.data.colmap import colmap_to_dataset

        root = colmap_to_dataset(args.source, args.images, args.output, query_names=_read_names(args.query_list))
    else:
        from segloc.data.kapture import kapture_to_dataset

        root = kapture_to_dataset(args.source, args.query, args.output)
    print(f"wrote dataset {root}")
    return 0


def _read_names(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise SeglocError(f"query list {path} does not exist")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def cmd_map_build(args: argparse.Namespace) -> int:
    from segloc.data.dataset import read_dataset

    dataset = read_dataset(args.dataset)
    if not dataset.mapping:
        raise SeglocError(f"{args.dataset}/mapping.txt lists no images: a map needs mapping images")
    _build_map(args.method, dataset, args.output, _config_section(args.config, "map"), args.overwrite, not args.no_progress)
    return 0


def _build_map(method_name: str, dataset, output: Path, config_values: dict | None, overwrite: bool, progress: bool, core=None) -> Path:
    """Build a method's map (``core``: a shared :class:`segloc.maps.build.CoreBuild`) and print its time and size."""
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    method = get_method(method_name)
    start = time.perf_counter()
    path = method.build(dataset, output, config_values, overwrite, progress, core=core)
    print(f"built {method.name} map {path} in {time.perf_counter() - start:.1f} s: {MapPackage.open(path).bytes()} bytes")
    return path


def cmd_map_info(args: argparse.Namespace) -> int:
    from segloc.maps.package import MapPackage

    package = MapPackage.open(args.map, verify_checksums=not args.no_verify)
    manifest = package.manifest
    print(f"map {package.path}: method {package.method}, frame {package.frame_id}, format version {manifest['format_version']}")
    print(f"created: {json.dumps(manifest.get('created', {}).get('time'))} by segloc {manifest.get('created', {}).get('segloc_version')}")
    for layer, info in package.layers.items():
        print(f"  layer {layer:<12} {package.bytes([layer]):>12} bytes  {info.get('description', '')}")
    print(f"  total              {package.bytes():>12} bytes")
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


def cmd_localize(args: argparse.Namespace) -> int:
    from segloc.data.dataset import ImageRecord, format_image_line, load_image, read_dataset
    from segloc.maps.package import MapPackage
    from segloc.methods import get_method

    package = MapPackage.open(args.map)
    method = get_method(args.method or package.method)
    localizer = method.localizer(package, _config_section(args.config, "localize"))
    jobs = []  # (name, image loader, camera)
    if args.dataset is not None:
        dataset = read_dataset(args.dataset)
        records = dataset.query if args.split == "query" else dataset.mapping
        if args.images:
            wanted = set(args.images)
            records = [r for r in records if r.name in wanted]
            missing = wanted - {r.name for r in records}
            if missing:
                raise SeglocError(f"images not in {args.split}.txt: {', '.join(sorted(missing))}")
        jobs = [(r.name, (lambda n=r.name: dataset.load_image(n)), r.camera) for r in records]
    elif args.image:
        if args.camera is None:
            raise SeglocError("--image needs --camera 'MODEL width height params...'")
        camera = _parse_camera(args.camera)
        jobs = [(str(p), (lambda p=p: load_image(p)), camera) for p in args.image]
    else:
        raise SeglocError("give --dataset DATASET or --image FILE... with --camera")
    lines, failures = [], 0
    for name, load, camera in jobs:
        image = load()
        if image.shape[:2] != (camera.height, camera.width):
            raise SeglocError(f"{name}: image is {image.shape[1]}x{image.shape[0]} but the camera is {camera.width}x{camera.height}")
        result = localizer.localize(image, camera)
        total = sum(result.timings.values())
        if result.success:
            lines.append(format_image_line(ImageRecord(Path(name).name if args.image else name, result.cam_from_world, camera)))
            print(f"{name}: localized with {result.num_inliers} inliers in {total:.2f} s")
        else:
            failures += 1
            print(f"{name}: FAILED ({result.info.get('failure_reason', 'no pose')}) in {total:.2f} s")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            "# estimated poses, dataset line format (cam_from_world, quaternion w x y z)\n" + "".join(f"{l}\n" for l in lines)
        )
        print(f"wrote {len(lines)} poses to {args.output}")
    print(f"localized {len(jobs) - failures} of {len(jobs)} images")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segloc.data.dataset import read_dataset
    from segloc.evaluate.replay import MapSummary, evaluate_bag
    from segloc.evaluate.report import format_summary
    from segloc.evaluate.run import evaluate_localizer
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
    package = MapPackage.open(args.map)
    method = get_method(args.method or package.method)
    bag_config = bag_read_config_from_args(args) if bag is not None else None
    dataset = read_dataset(args.dataset, require_query=True) if args.dataset is not None else None
    localizer = method.localizer(package, _config_section(args.config, "localize"))
    map_summary = MapSummary.from_package(package)
    if dataset is None:
        metrics = evaluate_bag(
            localizer,
            bag,
            args.output,
            bag_config,
            map_summary=map_summary,
            progress=not args.no_progress,
            limit=args.limit,
            extra={"method": method.name},
        )
    else:
        metrics = evaluate_localizer(
            localizer,
            dataset,
            args.output,
            map_bytes=map_summary.bytes,
            map_points3D=map_summary.points3D,
            mapping_centers=map_summary.mapping_centers,
            progress=not args.no_progress,
            limit=args.limit,
            map_path=map_summary.path,
            extra={"method": method.name},
        )
    print(format_summary(metrics))
    print(f"wrote {args.output}/metrics.json and plots")
    return 0


DEMO_SIZE = (320, 240)
"""Image size of the demo scene: the size the shipped network was trained at (fast on a CPU)."""


def _demo_checkpoint(args: argparse.Namespace, dataset_dir: Path, out: Path) -> Path:
    """The segmentation network of the demo: --checkpoint, a fresh training run (--train), or the shipped one."""
    from segloc.models.checkpoint import DEMO_CHECKPOINT, SHIPPED_CHECKPOINTS, shipped_checkpoint

    if args.checkpoint is not None:
        print(f"[2/4] segmentation network: {args.checkpoint}")
        return args.checkpoint
    if args.train:
        run_dir = out / "train_segloc"
        print(
            f"[2/4] training the SegLoc network on the mapping images into {run_dir} ({args.train_epochs} epochs; the trainer prints its progress)"
        )
        argv = ["train", "segloc", str(dataset_dir), "-o", str(run_dir), "--epochs", str(args.train_epochs)]
        if (run_dir / "resume").is_dir():
            argv.append("--resume")
        if args.no_progress:
            argv.append("--no-progress")
        train_args = build_parser().parse_args(argv)  # the trainer is a plugin command (segloc_train sits above segloc)
        train_args.func(train_args)
        return run_dir / "checkpoint"
    shipped = SHIPPED_CHECKPOINTS[DEMO_CHECKPOINT]
    if (args.scene, args.seed, tuple(args.size)) != (shipped["scene"], shipped["seed"], tuple(shipped["size"])):
        raise SeglocError(
            f"the shipped network was trained on the {shipped['scene']!r} scene (seed {shipped['seed']}, "
            f"{shipped['size'][0]}x{shipped['size'][1]}); for another scene pass --train (or --checkpoint CKPT)"
        )
    path = shipped_checkpoint(DEMO_CHECKPOINT)
    print(f"[2/4] segmentation network: the shipped one, {path} (--train trains it again; reproduce it with: {shipped['command']})")
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    """synth -> network -> maps -> evaluation on the embedded default scene, compared side by side."""
    import yaml

    from segloc.evaluate.report import format_comparison, write_json
    from segloc.maps.core import read_core
    from segloc.maps.package import MapPackage

    out: Path = args.output
    dataset_dir = out / "dataset"
    methods = ["segloc", "reference"] if args.method == "both" else [args.method]
    if not (dataset_dir / "scene.json").is_file() or args.overwrite:
        synth_args = argparse.Namespace(
            config=None,
            scene=args.scene,
            seed=args.seed,
            num_mapping=None,
            num_query=None,
            size=tuple(args.size),
            condition=args.condition,
            mapping_appearance=None,
            query_appearance=None,
            output=dataset_dir,
            overwrite=True,
            no_progress=args.no_progress,
            bag=[],
            bag_storage="sqlite3",
        )
        print(f"[1/4] rendering the synthetic '{args.scene}' scene ({args.condition}) into {dataset_dir}")
        cmd_synth(synth_args)
    else:
        print(f"[1/4] reusing the synthetic scene in {dataset_dir} (--overwrite renders it again)")

    from segloc.data.dataset import read_dataset

    dataset = read_dataset(dataset_dir)
    shared_core = None
    if len(methods) > 1:  # both maps triangulate the same SIFT geometry (default core options): build it once
        from segloc.maps.build import ReferenceMapConfig, build_core

        print("[3/4] building the map geometry both maps share (SIFT, known-pose triangulation)")
        shared_core = build_core(dataset, ReferenceMapConfig(), progress=not args.no_progress)

    def build_map(method: str, config: Path | None) -> None:
        _build_map(method, dataset, out / f"map_{method}", _config_section(config, "map"), True, not args.no_progress, shared_core)

    runs: list[tuple[str, str, Path, dict | None]] = []  # (row name, method, map, localize section)
    if "segloc" in methods:
        checkpoint = _demo_checkpoint(args, dataset_dir, out)
        out.mkdir(parents=True, exist_ok=True)
        map_config = out / "segloc_map.yaml"
        map_config.write_text(yaml.safe_dump({"map": {"checkpoint": str(Path(checkpoint).resolve())}}))
        print(f"[3/4] building the segloc map {out / 'map_segloc'}")
        build_map("segloc", map_config)
        runs += [("approximation", "segloc", out / "map_segloc", {"refine": False}), ("segloc", "segloc", out / "map_segloc", None)]
    else:
        print("[2/4] no network needed for the reference method")
    if "reference" in methods:
        print(f"[3/4] building the reference map {out / 'map_reference'}")
        build_map("reference", None)
        runs.append(("reference", "reference", out / "map_reference", None))

    rows = {}
    for name, method, map_dir, localize in runs:
        eval_dir = out / f"eval_{name}"
        config = None
        if localize is not None:
            config = out / f"localize_{name}.yaml"
            config.write_text(yaml.safe_dump({"localize": localize}))
        print(f"[4/4] {name}: localizing the queries and evaluating into {eval_dir}")
        cmd_evaluate(
            argparse.Namespace(
                map=map_dir,
                dataset=dataset_dir,
                method=method,
                output=eval_dir,
                config=config,
                no_progress=args.no_progress,
                limit=args.limit,
            )
        )
        rows[name] = json.loads((eval_dir / "metrics.json").read_text())
        package = MapPackage.open(map_dir)
        rows[name]["num_points"] = read_core(package).num_points
        rows[name]["map_bytes_per_point"] = round(package.bytes() / max(rows[name]["num_points"], 1), 1)
    write_json(out / "comparison.json", rows)
    print(f"\nside by side on {dataset_dir} (recall in %, errors over all queries, failures count as misses):\n")
    print(format_comparison(rows))
    print(f"\nwrote {out / 'comparison.json'}")
    return 0


# --- parser ------------------------------------------------------------------------------


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return width, height


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

    parser = argparse.ArgumentParser(prog="segloc", description="Privacy-preserving visual localization: maps, localization, evaluation.")
    parser.add_argument("--version", action="version", version=f"segloc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, progress: bool = True) -> None:
        if progress:
            p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = commands.add_parser(
        "demo",
        help="render the default synthetic scene, get the SegLoc network, build maps, evaluate them side by side (the README's first command)",
    )
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_DEMO_OUTPUT, help=f"output folder (default {DEFAULT_DEMO_OUTPUT})")
    p.add_argument(
        "--method",
        default="both",
        choices=["both", "segloc", "reference"],
        help="both (default): SegLoc (pose approximation and refinement) and the reference SIFT localizer",
    )
    p.add_argument("--scene", default="room", help="synthetic scene: room, corridor, street (default room)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--size", type=_size, default=DEMO_SIZE, help=f"image size (default {DEMO_SIZE[0]}x{DEMO_SIZE[1]}, the shipped network's)"
    )
    p.add_argument(
        "--condition",
        default="lighting",
        help="mapping/query imaging conditions: same, lighting, night, season, blur, hard, severe (default lighting)",
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
    p.add_argument("--scene", help="room, corridor or street")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-mapping", type=int, help="number of mapping images")
    p.add_argument("--num-query", type=int, help="number of query images")
    p.add_argument("--size", type=_size, help="image size WIDTHxHEIGHT (default 640x480)")
    p.add_argument("--condition", help="mapping/query imaging conditions: same, lighting, night, season, blur, hard")
    p.add_argument(
        "--mapping-appearance", help="imaging condition of the mapping images: day, overcast, evening, night, autumn, blurry, hard"
    )
    p.add_argument("--query-appearance", help="imaging condition of the query images (same presets)")
    p.add_argument(
        "--bag", action="append", default=[], choices=["mapping", "query"], help="also write a rosbag2 of this split (repeatable)"
    )
    p.add_argument("--bag-storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--overwrite", action="store_true")
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
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    maps = commands.add_parser("map", help="build and inspect map packages").add_subparsers(
        dest="map_command", required=True, metavar="ACTION"
    )
    p = maps.add_parser("build", help="build a map package from a dataset folder's mapping images")
    p.add_argument("dataset", type=Path)
    p.add_argument("--method", default="reference", help="method whose map to build (default reference)")
    p.add_argument("-o", "--output", type=Path, required=True, help="map folder to write")
    p.add_argument("--config", type=Path, help="YAML config with a 'map' section")
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_map_build)
    p = maps.add_parser("info", help="validate a map and print its layers and sizes")
    p.add_argument("map", type=Path)
    p.add_argument("--no-verify", action="store_true", help="skip the checksum verification")
    p.set_defaults(func=cmd_map_info)

    p = commands.add_parser("localize", help="localize images against a map")
    p.add_argument("map", type=Path)
    p.add_argument("--method", help="method (default: the map's)")
    p.add_argument("--dataset", type=Path, help="dataset folder whose images to localize")
    p.add_argument("--split", default="query", choices=["query", "mapping"])
    p.add_argument("--images", nargs="+", help="with --dataset: only these image names")
    p.add_argument("--image", type=Path, nargs="+", help="image files (with --camera)")
    p.add_argument("--camera", help="'MODEL width height params...' for --image, e.g. 'PINHOLE 640 480 500 500 320 240'")
    p.add_argument("--config", type=Path, help="YAML config with a 'localize' section")
    p.add_argument("-o", "--output", type=Path, help="write the poses in the dataset line format")
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
