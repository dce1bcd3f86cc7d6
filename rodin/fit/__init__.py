"""Stage 1: shared-decoder tri-plane fitting and the tri-plane store."""
