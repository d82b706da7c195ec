"""Where bytes live: local paths, s3:// and minio:// locations, through fsspec/s3fs.

Endpoint, region and keys come from the standard AWS variables and config files
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``,
``~/.aws/config`` ...), or from a :class:`StorageOptions` given to the run. For
``minio://HOST[:PORT]/bucket/prefix`` HOST is looked up first as an alias of MinIO's
client (``~/.mc/config.json``, as fastdup does), and otherwise used as the endpoint
``http://HOST[:PORT]``. Secrets are never logged or written to outputs.

Retries have one layer, botocore's own retry mode, set once for every S3 client the run
makes (:meth:`StorageOptions.botocore_config`): ``standard`` by default, or ``adaptive``
(standard, plus a client-side rate limit when S3 throttles), up to ``max_attempts``
attempts a request (10 by default; ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` set them
too). It retries refused, reset and timed-out connections, HTTP 500/502/503/504 and
throttling answers (SlowDown), with exponential backoff and jitter capped at 20 s. What
botocore does not retry is a response body whose stream breaks after the headers came
(boto/boto3#4111): s3fs, below us, repeats such a read (a whole GET, or the block an
open file was reading; ``get_file`` goes on from the byte it reached), up to 5 times.
This module adds no loop of its own: a failure that outlasts these retries is reported
with its location, and :func:`storage_unavailable` tells it from bad data (the shard it
struck is left unfinished for a rerun, never listed in features.bad.csv).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastdup_ray.errors import ConfigError, InputError, MissingDependencyError

log = logging.getLogger("fastdup_ray")

REMOTE_SCHEMES = ("s3://", "minio://")

# botocore's modes; legacy only because AWS_RETRY_MODE may name it.
RETRY_MODES = ("standard", "adaptive", "legacy")
DEFAULT_RETRY_MODE = "standard"
# botocore's backoff waits rand(0, 1) * min(2 ** n, 20) s before retry n: ten attempts ride
# out about a minute of outage (three, botocore's default, a few seconds).
DEFAULT_MAX_ATTEMPTS = 10


@dataclass
class StorageOptions:
    """Explicit settings for s3:// and minio:// locations; unset fields fall back to AWS's own lookup."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    # botocore's retry mode and attempts per request, the first included (module docstring).
    retry_mode: str | None = None
    max_attempts: int | str | None = None

    def __post_init__(self) -> None:
        # AWS's own variables where the run sets nothing, read where the options are made
        # (the driver): every worker of a cluster then retries alike.
        self.retry_mode = self.retry_mode or os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
        self.max_attempts = self.max_attempts or os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS

    def botocore_config(self) -> dict[str, Any]:
        """The botocore Config arguments every S3 client of the run is made with (checked
        here, so that a stray AWS variable never stops a run on local files)."""
        if self.retry_mode not in RETRY_MODES:
            raise ConfigError(
                f"retry_mode (AWS_RETRY_MODE) must be one of {', '.join(RETRY_MODES)}, "
                f"not {self.retry_mode!r}"
            )
        attempts = str(self.max_attempts)
        if not attempts.isdigit() or int(attempts) < 1:
            raise ConfigError(
                "max_attempts (AWS_MAX_ATTEMPTS) must be a whole number of at least 1, "
                f"not {self.max_attempts!r}"
            )
        # total_max_attempts counts the first attempt, as AWS_MAX_ATTEMPTS does (botocore's
        # max_attempts would count only the retries).
        return {
            "retries": {"mode": self.retry_mode, "total_max_attempts": int(attempts)},
            "connect_timeout": 10,
            "read_timeout": 60,
        }


def is_remote(location: str) -> bool:
    return location.startswith(REMOTE_SCHEMES)


def join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if is_remote(base) else os.path.join(base, name)


def _mc_alias(alias: str) -> dict[str, str] | None:
    config = Path(os.environ.get("MC_CONFIG_DIR", Path.home() / ".mc")) / "config.json"
    try:
        aliases = json.loads(config.read_text()).get("aliases", {})
    except (OSError, ValueError):
        return None
    return aliases.get(alias)


def resolve(location: str, options: StorageOptions | None = None):
    """(filesystem, path inside it) for a location; s3fs for s3:// and minio://."""
    options = options or StorageOptions()
    if not is_remote(location):
        import fsspec

        return fsspec.filesystem("file"), location
    try:
        import s3fs
    except ImportError:
        raise MissingDependencyError(
            "s3fs is needed for s3:// and minio:// paths: pip install s3fs"
        ) from None
    endpoint, key, secret = options.endpoint_url, options.key, options.secret
    if location.startswith("minio://"):
        host, _, path = location[len("minio://") :].partition("/")
        alias = _mc_alias(host)
        if alias:
            endpoint = endpoint or alias.get("url")
            key = key or alias.get("accessKey")
            secret = secret or alias.get("secretKey")
        else:
            endpoint = endpoint or f"http://{host}"
        key = key or os.environ.get("MINIO_ACCESS_KEY")
        secret = secret or os.environ.get("MINIO_SECRET_KEY")
    else:
        path = location[len("s3://") :]
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if options.region:
        client_kwargs["region_name"] = options.region
    fs = s3fs.S3FileSystem(
        key=key,
        secret=secret,
        profile=options.profile,
        client_kwargs=client_kwargs,
        config_kwargs=options.botocore_config(),  # the retry layer (module docstring)
        # fsspec keeps one filesystem (one S3 client) per process and options, shared by
        # every WorkDir and task: a new client costs ~0.2 s (botocore loads its service
        # model), which a WorkDir per exchange folder paid on most requests of the
        # distributed reduce. No listing is cached: other workers write the same prefixes.
        use_listings_cache=False,
    )
    return fs, path


def explain(location: str, exc: BaseException) -> InputError:
    """Turn a storage exception into an error that names the location and the cause."""
    text = str(exc)
    if (
        isinstance(exc, PermissionError)
        or "AccessDenied" in text
        or "Forbidden" in text
        or "InvalidAccessKeyId" in text
    ):
        return InputError(f"access denied to {location}: check the keys or the bucket policy")
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return InputError(f"{location} does not exist (no such bucket, prefix or file)")
    return InputError(f"cannot read {location}: {type(exc).__name__}: {text}")


def storage_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is the network or the storage service failing,
    once the S3 client's retries are spent, rather than the data being bad: a broken
    connection must not be reported as a corrupt archive."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _network_errors()):
            return True
        response = getattr(exc, "response", None)  # botocore's ClientError: S3's answer
        if (
            isinstance(response, dict)
            and response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import aiohttp
    import botocore.exceptions

    return (
        ConnectionError,
        TimeoutError,
        http.client.IncompleteRead,
        aiohttp.ClientError,
        botocore.exceptions.ConnectionError,
        botocore.exceptions.HTTPClientError,
    )


def read_bytes(location: str, options: StorageOptions | None = None) -> bytes:
    """The whole content of a file, local or remote (remote reads retried by the S3 client)."""
    if not is_remote(location):
        with open(location, "rb") as handle:
            return handle.read()
    fs, path = resolve(location, options)
    return fs.cat_file(path)


def object_version(info: dict) -> str:
    """``size:ETag`` of a listed object (its last-modified time where a store has no ETag):
    what tells a rerun that an object changed."""
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return f"{info.get('size', '')}:{str(tag).strip(chr(34))}"


def list_files_with_versions(
    location: str, options: StorageOptions | None = None, recursive: bool = True
) -> dict[str, str]:
    """Every file under a remote prefix (recursive, or directly in it), as full locations
    mapped to their version (object_version); or the location itself if it is a file."""
    fs, path = resolve(location, options)
    scheme = location.split("://", 1)[0]
    prefix = location[: len(location) - len(path)] if location.endswith(path) else f"{scheme}://"
    try:
        if fs.isfile(path):
            return {location: object_version(fs.info(path))}
        if recursive:
            found = fs.find(path, detail=True)
        else:
            found = {e["name"]: e for e in fs.ls(path, detail=True) if e.get("type") == "file"}
    except Exception as exc:  # noqa: BLE001 - reported with the location
        raise explain(location, exc) from None
    if not found and not fs.exists(path):
        raise InputError(f"{location} does not exist (no such bucket, prefix or file)")
    return {f"{prefix}{p}": object_version(info) for p, info in sorted(found.items())}
