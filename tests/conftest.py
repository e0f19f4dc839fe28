"""accel's own tests run with accel's pytest plugin (opt-in for everyone else: `-p accel.testing`)."""
pytest_plugins = ["accel.testing"]
