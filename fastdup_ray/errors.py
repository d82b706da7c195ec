"""Errors a user can act on. The CLI prints these as one line, without a traceback."""


class FastdupRayError(Exception):
    """Base class: something about the run's inputs or settings is wrong."""


class ConfigError(FastdupRayError, ValueError):
    """A parameter has an invalid value; the message names the parameter."""


class InputError(FastdupRayError):
    """The input path is missing, empty or unreadable; the message names the path."""


class MissingDependencyError(FastdupRayError, ImportError):
    """An optional package is needed; the message gives the pip line that installs it."""


class StorageUnavailableError(FastdupRayError):
    """The storage (S3, the network) still failed after the S3 client's retries while some
    shards were read: those shards are not finished (no marker, nothing in any bad list),
    the others are, and running the same command again extracts only those. ``shards``
    names them; ``location`` and ``cause`` are where and why the storage failed first."""

    def __init__(
        self, message: str, shards: list[str] | None = None, location: str = "", cause: str = ""
    ) -> None:
        super().__init__(message)
        self.shards, self.location, self.cause = shards or [], location, cause


class GpuUnavailableError(FastdupRayError):
    """compute='gpu' was decided for the run, but CUDA does not start in a worker that must
    embed on it; the message says why. The GPU model is never run on CPU instead."""


class SearchNotReadyError(FastdupRayError, RuntimeError):
    """search() or vector_search() was called before init_search() loaded a run."""


class NotInFastdupRayError(FastdupRayError, NotImplementedError):
    """A fastdup feature this tool does not have (captions, detectors, its model zoo, ...);
    the message says what to use instead."""
