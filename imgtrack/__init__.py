"""imgtrack: bind every built image digest to its git commit and semantic version."""

__version__ = "0.1.0"
