"""Rodin: diffusion models that sculpt 3D avatars as tri-plane radiance fields."""

__version__ = "0.1.0"
