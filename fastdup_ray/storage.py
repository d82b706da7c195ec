"""Where bytes live: local paths, s3:// and minio:// locations, through fsspec/s3fs.

Endpoint, region and keys come from the standard AWS variables and config files
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``,
``~/.aws/config`` ...), or from a :class:`StorageOptions` given to the run. For
``minio://HOST[:PORT]/bucket/prefix`` HOST is looked up first as an alias of MinIO's
client (``~/.mc/config.json``, as fastdup does), and otherwise used as the endpoint
``http://HOST[:PORT]``. Secrets are never logged or written to outputs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from fastdup_ray.errors import InputError, MissingDependencyError

log = logging.getLogger("fastdup_ray")

T = TypeVar("T")
REMOTE_SCHEMES = ("s3://", "minio://")


@dataclass
class StorageOptions:
    """Explicit settings for s3:// and minio:// locations; unset fields fall back to AWS's own lookup."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    retries: int = 5

    def public(self) -> dict[str, Any]:
        """What may be logged or written to config.json: everything but the keys."""
        return {"endpoint_url": self.endpoint_url, "region": self.region, "profile": self.profile, "retries": self.retries}


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
        raise MissingDependencyError("s3fs is needed for s3:// and minio:// paths: pip install s3fs") from None
    endpoint, key, secret = options.endpoint_url, options.key, options.secret
    if location.startswith("minio://"):
        host, _, path = location[len("minio://"):].partition("/")
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
        path = location[len("s3://"):]
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
        # botocore retries throttling and 5xx answers itself, with backoff.
        config_kwargs={"retries": {"max_attempts": options.retries, "mode": "standard"}, "connect_timeout": 10, "read_timeout": 60},
        skip_instance_cache=True,
    )
    return fs, path


def explain(location: str, exc: BaseException) -> InputError:
    """Turn a storage exception into an error that names the location and the cause."""
    text = str(exc)
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text or "InvalidAccessKeyId" in text:
        return InputError(f"access denied to {location}: check the keys or the bucket policy")
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return InputError(f"{location} does not exist (no such bucket, prefix or file)")
    return InputError(f"cannot read {location}: {type(exc).__name__}: {text}")


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: connections dropped or refused, timeouts, server-side failures."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    text = str(exc)
    return any(s in name for s in ("Connect", "Timeout", "EndpointConnection", "ClientPayload", "ServerDisconnected")) or any(
        s in text for s in ("Connection refused", "InternalError", "ServiceUnavailable", "SlowDown", "503", "500 ")
    )


RETRY_ATTEMPTS = 6


def retry_delay(attempt: int, base_delay: float = 0.5) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1): exponential, with jitter."""
    return base_delay * 2 ** (attempt - 1) * (0.5 + random.random())


def with_retries(action: Callable[[], T], what: str, attempts: int = RETRY_ATTEMPTS, base_delay: float = 0.5) -> T:
    """Run ``action``; retry transient failures with exponential backoff and jitter."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - classified below
            if attempt == attempts or not is_transient(exc):
                raise
            delay = retry_delay(attempt, base_delay)
            log.warning("transient error on %s (%s); retry %d/%d in %.1fs", what, type(exc).__name__, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_bytes(location: str, options: StorageOptions | None = None) -> bytes:
    """The whole content of a file, local or remote (remote reads retried)."""
    if not is_remote(location):
        with open(location, "rb") as handle:
            return handle.read()
    fs, path = resolve(location, options)
    return with_retries(lambda: fs.cat_file(path), location)


def object_version(info: dict) -> str:
    """``size:ETag`` of a listed object (its last-modified time where a store has no ETag):
    what tells a rerun that an object changed."""
    tag = info.get("ETag") or info.get("etag") or info.get("LastModified") or info.get("mtime") or ""
    return f"{info.get('size', '')}:{str(tag).strip(chr(34))}"


def list_files_with_versions(location: str, options: StorageOptions | None = None, recursive: bool = True) -> dict[str, str]:
    """Every file under a remote prefix (recursive, or directly in it), as full locations
    mapped to their version (object_version); or the location itself if it is a file."""
    fs, path = resolve(location, options)
    scheme = location.split("://", 1)[0]
    prefix = location[: len(location) - len(path)] if location.endswith(path) else f"{scheme}://"
    # fsspec reuses one filesystem per process with its listings cached: a second run in
    # the same process must see what was uploaded since the first.
    fs.invalidate_cache(path)
    try:
        if with_retries(lambda: fs.isfile(path), location):
            return {location: object_version(with_retries(lambda: fs.info(path), location))}
        if recursive:
            found = with_retries(lambda: fs.find(path, detail=True), location)
        else:
            found = {e["name"]: e for e in with_retries(lambda: fs.ls(path, detail=True), location) if e.get("type") == "file"}
    except Exception as exc:  # noqa: BLE001 - reported with the location
        raise explain(location, exc) from None
    if not found and not with_retries(lambda: fs.exists(path), location):
        raise InputError(f"{location} does not exist (no such bucket, prefix or file)")
    return {f"{prefix}{p}": object_version(info) for p, info in sorted(found.items())}
