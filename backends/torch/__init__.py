"""The torch backend package."""
