"""Offline training pipelines; imports segloc, never ROS."""
