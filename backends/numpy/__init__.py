"""The numpy backend package."""
