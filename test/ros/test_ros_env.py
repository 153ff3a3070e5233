"""The ROS 2 test environment works between processes: tf2_msgs/TFMessage on /tf and 640x480 rgb8 images at 30 Hz.

The test starts two processes with the running interpreter: a *listener* subscribing to ``/tf``
(reliable, as tf2_ros does) and to a camera topic (best effort, sensor-data QoS), and a *talker*
publishing both. It checks that the TF messages arrive with identical content (and the standard
Jazzy type hash, so the generated tf2_msgs matches the real one on the wire) and that at least 95 %
of the images arrive intact with the Fast DDS profile config/fastdds_shm.xml.

This file is also the child processes' program::

    python test/ros/test_ros_env.py listen --token T --images 150 --tf 10
    python test/ros/test_ros_env.py talk --token T --images 150 --tf 10

The talker waits for a ``GO`` line on stdin; the listener prints ``MATCHED`` once it sees both
publishers, and one JSON line with its result before it exits.
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import numpy as np

TF_TOPIC = "/tf"
IMAGE_TOPIC = "/segloc_env_test/image_raw"
WIDTH, HEIGHT, CHANNELS = 640, 480, 3
RATE_HZ = 30.0
NUM_IMAGES = 150  # 5 s at 30 Hz
NUM_TF = 10
MIN_IMAGE_FRACTION = 0.95
# Type hash of tf2_msgs/msg/TFMessage in ROS 2 Jazzy (as `ros2 topic info -v /tf` shows it on a Jazzy robot).
JAZZY_TFMESSAGE_TYPE_HASH = "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
IDLE_TIMEOUT_S = 3.0  # the listener stops this long after the last message
MATCH_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------------------------
# Message content shared by talker, listener and test
# --------------------------------------------------------------------------------------------


def expected_transforms(token: str) -> list[dict[str, Any]]:
    """The transforms the talker publishes in every TFMessage, as plain dicts (exactly representable floats).

    Frame names contain ``token`` so that messages of a concurrent run on the same machine are told apart.
    """
    stamp = {"sec": 1_700_000_000, "nanosec": 123_456_789}
    return [
        {
            "header": {"stamp": stamp, "frame_id": "map"},
            "child_frame_id": f"segloc_test_{token}/odom",
            "transform": {
                "translation": {"x": 1.5, "y": -2.25, "z": 0.125},
                "rotation": {"x": 0.0, "y": 0.0, "z": 0.6, "w": 0.8},
            },
        },
        {
            "header": {"stamp": stamp, "frame_id": f"segloc_test_{token}/odom"},
            "child_frame_id": f"segloc_test_{token}/base_link",
            "transform": {
                "translation": {"x": -0.5, "y": 0.75, "z": 0.0},
                "rotation": {"x": 0.5, "y": -0.5, "z": 0.5, "w": -0.5},
            },
        },
    ]


def image_frame_id(token: str) -> str:
    """The camera frame of this run's images."""
    return f"segloc_test_{token}/camera_optical"


@np.errstate(over="ignore")
def image_pattern(seq: int) -> np.ndarray:
    """Pixel bytes of image number ``seq``: a (HEIGHT*WIDTH*CHANNELS,) uint8 ramp shifted by ``seq``."""
    base = (np.arange(HEIGHT * WIDTH * CHANNELS, dtype=np.uint32) % 251).astype(np.uint8)
    return base + np.uint8(seq % 256)


def message_to_dict(msg: Any) -> Any:
    """Convert a ROS message (recursively) into dicts, lists and scalars, field by field."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: message_to_dict(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, list | tuple):
        return [message_to_dict(item) for item in msg]
    if isinstance(msg, np.ndarray):
        return msg.tolist()
    return msg


def fill_message(msg: Any, values: dict[str, Any]) -> Any:
    """Set the fields of ``msg`` from a dict as made by :func:`message_to_dict` (nested messages only, no arrays)."""
    for name, value in values.items():
        if isinstance(value, dict):
            fill_message(getattr(msg, name), value)
        else:
            setattr(msg, name, value)
    return msg


def type_hash_string(type_hash: Any) -> str:
    """Format an rclpy TypeHash as ``RIHS01_<hex>``."""
    return f"RIHS{type_hash.version:02d}_{type_hash.value.hex()}"


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def run_talker(token: str, num_images: int, num_tf: int) -> int:
    """Publish ``num_tf`` TFMessages (reliable) and ``num_images`` images (best effort) at RATE_HZ after a GO line."""
    import array

    import rclpy
    from geometry_msgs.msg import TransformStamped
    from rclpy.duration import Duration
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    rclpy.init()
    node = rclpy.create_node("segloc_env_talker")
    tf_pub = node.create_publisher(TFMessage, TF_TOPIC, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    image_pub = node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
    try:
        print("WAITING", flush=True)
        if sys.stdin.readline().strip() != "GO":
            print("talker: no GO on stdin, exiting", file=sys.stderr)
            return 2
        deadline = time.monotonic() + MATCH_TIMEOUT_S
        while tf_pub.get_subscription_count() < 1 or image_pub.get_subscription_count() < 1:
            if time.monotonic() > deadline:
                print("talker: no subscriber matched within the timeout", file=sys.stderr)
                return 3
            time.sleep(0.05)

        tf_msg = TFMessage(transforms=[fill_message(TransformStamped(), t) for t in expected_transforms(token)])
        tf_every = max(1, num_images // num_tf)
        tf_sent = 0
        period = 1.0 / RATE_HZ
        next_time = time.monotonic()
        for seq in range(num_images):
            msg = Image(height=HEIGHT, width=WIDTH, encoding="rgb8", is_bigendian=0, step=WIDTH * CHANNELS)
            msg.header.frame_id = image_frame_id(token)
            msg.header.stamp.sec = seq
            msg.data = array.array("B", image_pattern(seq).tobytes())
            image_pub.publish(msg)
            if seq % tf_every == 0 and tf_sent < num_tf:
                tf_pub.publish(tf_msg)
                tf_sent += 1
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        while tf_sent < num_tf:
            tf_pub.publish(tf_msg)
            tf_sent += 1
        acked = tf_pub.wait_for_all_acked(Duration(seconds=10))
        print(json.dumps({"talker": {"images_sent": num_images, "tf_sent": tf_sent, "tf_acked": bool(acked)}}), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def run_listener(token: str, num_images: int, num_tf: int, timeout_s: float) -> int:
    """Subscribe to /tf and the image topic; print MATCHED when both publishers are seen, then one JSON result line."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from tf2_msgs.msg import TFMessage

    rclpy.init()
    node = rclpy.create_node("segloc_env_listener")
    frame_id = image_frame_id(token)
    our_frames = {t["child_frame_id"] for t in expected_transforms(token)}
    result: dict[str, Any] = {"tf": [], "images_ok": 0, "images_bad": [], "image_seqs": [], "foreign": 0, "tf_type_hash": None}
    last_message = [time.monotonic()]

    def on_tf(msg: TFMessage) -> None:
        if not {t.child_frame_id for t in msg.transforms} & our_frames:
            result["foreign"] += 1
            return
        result["tf"].append(message_to_dict(msg))
        last_message[0] = time.monotonic()

    def on_image(msg: Image) -> None:
        if msg.header.frame_id != frame_id:
            result["foreign"] += 1
            return
        seq = msg.header.stamp.sec
        data = np.frombuffer(msg.data, dtype=np.uint8)
        layout = (msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
        if layout == (HEIGHT, WIDTH, "rgb8", WIDTH * CHANNELS, 0) and np.array_equal(data, image_pattern(seq)):
            result["images_ok"] += 1
        else:
            result["images_bad"].append(seq)
        result["image_seqs"].append(seq)
        last_message[0] = time.monotonic()

    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    tf_sub = node.create_subscription(TFMessage, TF_TOPIC, on_tf, reliable)
    image_sub = node.create_subscription(Image, IMAGE_TOPIC, on_image, qos_profile_sensor_data)
    try:
        start = time.monotonic()
        while tf_sub.get_publisher_count() < 1 or image_sub.get_publisher_count() < 1:
            if time.monotonic() - start > MATCH_TIMEOUT_S:
                print("listener: no publisher matched within the timeout", file=sys.stderr)
                return 3
            rclpy.spin_once(node, timeout_sec=0.05)
        infos = node.get_publishers_info_by_topic(TF_TOPIC)
        if infos:
            result["tf_type_hash"] = type_hash_string(infos[0].topic_type_hash)
        print("MATCHED", flush=True)
        last_message[0] = time.monotonic()
        while time.monotonic() - start < timeout_s:
            rclpy.spin_once(node, timeout_sec=0.05)
            if result["images_ok"] + len(result["images_bad"]) >= num_images and len(result["tf"]) >= num_tf:
                break
            if time.monotonic() - last_message[0] > IDLE_TIMEOUT_S:
                break
        print(json.dumps({"listener": result}), flush=True)
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    """Command line of the child processes: ``talk`` or ``listen``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["talk", "listen"])
    parser.add_argument("--token", required=True, help="run identifier put into frame names")
    parser.add_argument("--images", type=int, default=NUM_IMAGES)
    parser.add_argument("--tf", type=int, default=NUM_TF)
    parser.add_argument("--timeout", type=float, default=60.0, help="listener: overall time limit in seconds")
    args = parser.parse_args(argv)
    if args.role == "talk":
        return run_talker(args.token, args.images, args.tf)
    return run_listener(args.token, args.images, args.tf, args.timeout)


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


def _line_reader(stream: IO[str]) -> queue.Queue[str | None]:
    """Read ``stream`` line by line in a daemon thread; None marks the end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str | None], wanted: str, timeout_s: float, seen: list[str]) -> bool:
    """Collect lines into ``seen`` until one equals ``wanted`` (True) or the stream ends or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            return False
        if line is None:
            return False
        seen.append(line)
        if line == wanted:
            return True
    return False


def _drain(lines: queue.Queue[str | None], seen: list[str], timeout_s: float) -> None:
    """Collect the remaining lines into ``seen`` until the stream ends (or ``timeout_s`` passes)."""
    _wait_for_line(lines, "\0never\0", timeout_s, seen)


def _json_line(lines: list[str], key: str) -> dict[str, Any] | None:
    """The value under ``key`` of the last JSON object line that has it."""
    for line in reversed(lines):
        if line.startswith("{"):
            obj = json.loads(line)
            if key in obj:
                return obj[key]
    return None


def _stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a child process still running after the test (then kill it)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tf_and_images_between_processes(ros_env: dict[str, str], tmp_path: Path) -> None:
    """Two processes: TFMessages arrive unchanged, >= 95 % of 150 VGA rgb8 images at 30 Hz arrive intact."""
    token = uuid.uuid4().hex[:12]
    common = ["--token", token, "--images", str(NUM_IMAGES), "--tf", str(NUM_TF)]
    script = str(Path(__file__).resolve())
    listener_err = (tmp_path / "listener.err").open("w")
    talker_err = (tmp_path / "talker.err").open("w")
    listener = subprocess.Popen(
        [sys.executable, script, "listen", *common, "--timeout", "60"],
        env=ros_env,
        stdout=subprocess.PIPE,
        stderr=listener_err,
        text=True,
    )
    talker = subprocess.Popen(
        [sys.executable, script, "talk", *common],
        env=ros_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=talker_err,
        text=True,
    )
    listener_lines: list[str] = []
    talker_lines: list[str] = []

    def diagnostics() -> str:
        listener_err.flush()
        talker_err.flush()
        return (
            f"\nlistener stdout: {listener_lines}\nlistener stderr: {(tmp_path / 'listener.err').read_text()[-3000:]}"
            f"\ntalker stdout: {talker_lines}\ntalker stderr: {(tmp_path / 'talker.err').read_text()[-3000:]}"
        )

    try:
        assert talker.stdin is not None and talker.stdout is not None and listener.stdout is not None
        talker_out = _line_reader(talker.stdout)
        listener_out = _line_reader(listener.stdout)
        assert _wait_for_line(talker_out, "WAITING", MATCH_TIMEOUT_S, talker_lines), "talker did not start" + diagnostics()
        assert _wait_for_line(listener_out, "MATCHED", MATCH_TIMEOUT_S, listener_lines), "listener never matched the talker" + diagnostics()
        talker.stdin.write("GO\n")
        talker.stdin.flush()
        talker_rc = talker.wait(timeout=NUM_IMAGES / RATE_HZ + MATCH_TIMEOUT_S + 20)
        listener_rc = listener.wait(timeout=60 + 10)
        _drain(talker_out, talker_lines, 5)
        _drain(listener_out, listener_lines, 5)
    finally:
        _stop(talker)
        _stop(listener)
        listener_err.close()
        talker_err.close()

    assert talker_rc == 0, "talker failed" + diagnostics()
    assert listener_rc == 0, "listener failed" + diagnostics()
    sent = _json_line(talker_lines, "talker")
    got = _json_line(listener_lines, "listener")
    assert sent is not None and got is not None, "no result line" + diagnostics()

    # TF: every message arrives (reliable), with exactly the content sent, under the standard Jazzy type hash.
    assert sent["tf_acked"], "the listener did not acknowledge all TF messages" + diagnostics()
    assert len(got["tf"]) == NUM_TF, f"received {len(got['tf'])} of {NUM_TF} TFMessages" + diagnostics()
    expected_tf = {"transforms": expected_transforms(token)}
    for received in got["tf"]:
        assert received == expected_tf
    assert got["tf_type_hash"] == JAZZY_TFMESSAGE_TYPE_HASH, "tf2_msgs/msg/TFMessage differs from the Jazzy definition"

    # Images: best effort, so a few may drop; with the large-SHM profile at least 95 % arrive, none corrupted.
    assert got["images_bad"] == [], f"corrupted images {got['images_bad']}"
    assert got["images_ok"] >= MIN_IMAGE_FRACTION * NUM_IMAGES, (
        f"received {got['images_ok']} of {NUM_IMAGES} images (< {MIN_IMAGE_FRACTION:.0%})" + diagnostics()
    )
    assert len(set(got["image_seqs"])) == len(got["image_seqs"]), "duplicate images"


if __name__ == "__main__":
    sys.exit(main())
