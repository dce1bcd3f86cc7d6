"""The `rodin` command: one verb per job."""
