"""Reading and writing model files: safetensors, Hugging Face tokenizers, sampling of generated tokens."""
