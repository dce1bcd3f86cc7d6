"""Procedural avatars, NeRF-synthetic reading and writing, dataset index."""
