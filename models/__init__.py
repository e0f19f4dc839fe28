"""Llama-family models written only against accel."""
