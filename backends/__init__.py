"""In-tree backend plugins, installed as `accel.backends` and registered by entry point."""
