"""Expected failures, each carrying a message written for the user.

The CLI turns these into one line on stderr and a non-zero exit code; anything else is a bug and
keeps its traceback.
"""


class RodinError(Exception):
    """A failure the user can act on (bad input, missing file, wrong setting)."""


class DataError(RodinError):
    """A data file or folder is missing, malformed or inconsistent."""


class ConfigError(RodinError):
    """A configuration has an unknown key, a wrong type or an unknown preset."""


class FitError(RodinError):
    """Fitting cannot proceed for a subject (too few views, nothing visible, NaN loss)."""


class TrainError(RodinError):
    """Training cannot go on (a NaN loss, a checkpoint from other settings)."""
