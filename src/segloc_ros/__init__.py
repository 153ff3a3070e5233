"""ROS 2 adapters: thin rclpy nodes over segloc cores (the ROS issue builds them)."""
