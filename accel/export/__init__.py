"""Exporting accel graphs to interchange formats (ONNX) for vendor toolchains."""
