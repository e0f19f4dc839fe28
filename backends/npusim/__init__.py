"""npusim: a simulated domestic (non-CUDA) accelerator. See `backend.py` and docs/porting.md."""
from .backend import POLICIES, NpuSimBackend
from .memory import DeviceArray, DeviceMemory
from .profile import ChipProfile, load_profile, profile_names

__all__ = ["NpuSimBackend", "POLICIES", "DeviceArray", "DeviceMemory", "ChipProfile", "load_profile",
           "profile_names"]
