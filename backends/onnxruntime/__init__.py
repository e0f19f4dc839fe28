"""The onnxruntime backend package."""
