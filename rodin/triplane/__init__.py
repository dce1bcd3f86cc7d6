"""Tri-planes: the type, fast sampling, the shared MLP decoder."""
