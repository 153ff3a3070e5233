"""Visual localization with SegLoc: segmentation_node, retrieval_node and pose_refinement_node (or one container).

    ros2 launch segloc_ros localize.launch.py map:=/maps/office image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info [composition:=true] [use_sim_time:=true]

Arguments, remappings and parameters come from segloc_ros.launch_description (plain Python);
this file only turns them into launch actions. test/ros/test_launch.py runs it with launch.LaunchService.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from segloc_ros import launch_description as segloc_launch


def _nodes(context):
    arguments = segloc_launch.launch_arguments(get_package_share_directory(segloc_launch.PACKAGE))
    values = {argument.name: LaunchConfiguration(argument.name).perform(context) for argument in arguments}
    return [
        Node(
            package=segloc_launch.PACKAGE,
            executable=process.executable,
            name=process.name,
            parameters=process.parameters,
            remappings=process.remappings,
            output="screen",
        )
        for process in segloc_launch.node_launches(values)
    ]


def generate_launch_description():
    share = get_package_share_directory(segloc_launch.PACKAGE)
    actions = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in segloc_launch.launch_arguments(share)
    ]
    actions += [SetEnvironmentVariable(name, value) for name, value in segloc_launch.environment(share).items()]
    actions.append(OpaqueFunction(function=_nodes))
    return LaunchDescription(actions)
