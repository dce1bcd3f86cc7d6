"""Cameras, rays, volume rendering, turntables and meshing."""
