"""Errors shared across modules, and the base of every error the CLI turns into one line and a non-zero exit."""


class GanxferError(Exception):
    """A problem with the user's input or environment, phrased as one line that names the fix."""

    exit_code = 2  # what the CLI exits with (an interrupted run uses 130 / 143)


class OptionError(GanxferError):
    """A command-line option whose value cannot be used, phrased as one line."""


class WeightsError(GanxferError, RuntimeError):
    """Pretrained weights (a backbone's, the feature extractor's) neither cached nor downloadable, or a weight file
    that does not fit."""
