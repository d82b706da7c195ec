"""Errors a user can act on. The CLI prints these as one line, without a traceback."""


class FastdupRayError(Exception):
    """Base class: something about the run's inputs or settings is wrong."""


class ConfigError(FastdupRayError, ValueError):
    """A parameter has an invalid value; the message names the parameter."""


class InputError(FastdupRayError):
    """The input path is missing, empty or unreadable; the message names the path."""


class MissingDependencyError(FastdupRayError, ImportError):
    """An optional package is needed; the message gives the pip line that installs it."""
