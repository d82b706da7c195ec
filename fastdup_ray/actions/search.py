"""fastdup's image search over a finished run: ``init_search(k, work_dir)`` loads the run's
model (the one config.json records) and its saved index once; ``search(query)`` embeds
query images with the map side's decode and embed, so an image of the run finds itself
at distance 1.0; ``vector_search(vec=...)`` takes feature vectors as they are.

A query is an image file (local or s3), a list of them, a PIL image, a numpy image
(H x W x 3 or H x W uint8), or a feature vector / n x d matrix. The answer is fastdup's
frame: ``from`` (the query), ``to`` (a file of the run), ``distance`` (cosine similarity).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from fastdup_ray.errors import ConfigError, GpuUnavailableError, InputError, SearchNotReadyError
from fastdup_ray.map.embed import model_digest, model_file_for
from fastdup_ray.reduce.search import SavedIndex, query_matrix, search_frame
from fastdup_ray.rundir import results
from fastdup_ray.rundir.storage import StorageOptions, is_remote, read_bytes
from fastdup_ray.rundir.workdir import WorkDir

log = logging.getLogger("fastdup_ray")

QUERY_IMAGE = "query_image"  # the ``from`` of an image given as pixels without a name
QUERY_VECTOR = "query_vector"  # fastdup's name for a vector query


class Searcher:
    """A finished run's model and saved index, loaded once; each search answers from them."""

    def __init__(
        self,
        k: int,
        work_dir: str | os.PathLike,
        d: int | None = None,
        model_path: str | None = None,
        threshold: float | None = None,
        store_int: bool = False,
        storage: StorageOptions | None = None,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be an integer >= 1 (neighbours per query), got {k!r}")
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold must be between 0 and 1 (a cosine similarity), got {threshold!r}")
        self.k, self.threshold, self.store_int = int(k), threshold, bool(store_int)
        location = os.fspath(work_dir)
        if not is_remote(location) and not os.path.isdir(location):
            raise InputError(f"no run in {location}: no such folder; run fastdup_ray there first")
        self.work = WorkDir(location, storage)
        self.storage = storage
        # run_mode 2 over features written by save_binary_feature records no config.json.
        config = results.read_config(self.work, missing_ok=True) or {}
        self.index = SavedIndex(self.work, nprobe=int(config.get("nprobe", 2)))
        from fastdup_ray.reports.tables import remember_run

        remember_run(location)  # a gallery of a search frame finds this run without work_dir
        if d is not None and d != self.index.d:
            raise ConfigError(f"d={d} but the run in {self.work.location} has {self.index.d}-d features")
        self.model_file = model_file_for(
            config.get("model_path"), config.get("precision", "auto"), config.get("compute", "cpu")
        )
        if model_path is not None and os.path.abspath(model_path) != os.path.abspath(self.model_file):
            raise ConfigError(
                f"model_path {model_path!r} is not the model the run in {self.work.location} embedded with "
                f"({self.model_file}): queries must be embedded by the run's model to compare"
            )
        self.model_sha256 = config.get("model_sha256")  # runs recorded before it have none
        self.compute = config.get("compute", "cpu")
        self._embedder = None
        # A run of images (they have statistics) has its model loaded now; a run of your own
        # features has none to embed a query image with.
        self._of_images = results.has_stats(self.work)
        if self._of_images:
            try:
                self._load_model()
            except (
                GpuUnavailableError,
                ConfigError,
            ) as exc:  # vector searches still work; image ones say this
                log.warning("%s", exc)

    def _load_model(self):
        if self._embedder is None:
            if not self._of_images:
                raise ConfigError(
                    f"the run in {self.work.location} is of your own {self.index.d}-d features, not of "
                    "images: search it with vector_search(vec=...)"
                )
            from fastdup_ray.map.embed import Embedder

            self._check_model_unchanged()
            try:
                self._embedder = Embedder(
                    self.model_file, d=self.index.d, compute=self.compute, threads=min(4, os.cpu_count() or 1)
                )
            except GpuUnavailableError as exc:
                # Another model (the CPU one) would give other vectors: none of them compare.
                model = os.path.basename(self.model_file)
                raise GpuUnavailableError(
                    f"the run in {self.work.location} embedded on GPU with {model}, so its image queries "
                    f"must too, and here {str(exc).partition('; ')[0]}; search where CUDA starts, or by "
                    "vector_search(vec=...)"
                ) from None
        return self._embedder

    def _check_model_unchanged(self) -> None:
        """The model file still holds the bytes the run embedded with: one retrained and
        saved over it would embed queries that do not compare with the run's vectors."""
        if self.model_sha256 is None or not os.path.exists(self.model_file):
            return  # a missing file is the Embedder's error to give
        if model_digest(self.model_file) != self.model_sha256:
            raise ConfigError(
                f"model_path {self.model_file} has changed since the run in {self.work.location} embedded "
                f"with it (its SHA-256 is not the {self.model_sha256[:12]}... config.json records): image "
                "queries must be embedded by the run's model; put that file back, run again with "
                "overwrite=True, or search by vector_search(vec=...)"
            )

    def search(self, query: Any, img: Any = None) -> pl.DataFrame:
        """The k nearest images of the run to ``query`` (see the module docstring); with
        ``img`` (pixels), ``query`` is only its name, as in fastdup's search(filename, img)."""
        if img is not None:
            name = os.fspath(query) if isinstance(query, (str, os.PathLike)) else QUERY_IMAGE
            return self._answer([name], self._embed([self._pixels(img, name)]))
        if isinstance(query, np.ndarray) and not is_image_array(query):
            return self.vector_search(query)
        items = list(query) if isinstance(query, (list, tuple)) else [query]
        if not items:
            raise ConfigError("search() was given an empty list of queries")
        names = [query_name(item, i, len(items)) for i, item in enumerate(items)]
        return self._answer(names, self._embed([self._pixels(item, n) for item, n in zip(items, names)]))

    def vector_search(self, vec: Any, filename: str | Sequence[str] = QUERY_VECTOR) -> pl.DataFrame:
        """The k nearest images of the run to each row of ``vec`` (d values or n x d);
        ``filename`` names the rows (one name: numbered ``name_0``, ... for several)."""
        vectors = query_matrix(vec, self.index.d)
        if isinstance(filename, str):
            names = [filename] if len(vectors) == 1 else [f"{filename}_{i}" for i in range(len(vectors))]
        else:
            names = [str(name) for name in filename]
            if len(names) != len(vectors):
                raise ConfigError(f"filename names {len(names)} vectors but vec has {len(vectors)} rows")
        return self._answer(names, vectors)

    def _answer(self, names: list[str], vectors: np.ndarray) -> pl.DataFrame:
        src, dst, sim = self.index.search(vectors, self.k)
        return search_frame(names, src, dst, sim, self.index.name_column, self.threshold, self.store_int)

    def _embed(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self._load_model().embed(np.stack(pixels))

    def _pixels(self, item: Any, name: str) -> np.ndarray:
        """One query image as the model's square uint8 input, decoded as the map side does."""
        from fastdup_ray.map.decode import BadImage, decode_image, picture_pixels, resize_frame

        size = self._load_model().image_size
        if isinstance(item, (str, os.PathLike)):
            location = os.fspath(item)
            try:
                data = read_bytes(location, self.storage)
            except FileNotFoundError:
                raise InputError(f"query image {location} does not exist") from None
            except OSError as exc:
                raise InputError(f"cannot read query image {location}: {exc}") from None
            try:
                return decode_image(data, size)
            except BadImage as exc:
                raise InputError(f"query image {location} cannot be decoded: {exc}") from None
        if isinstance(item, np.ndarray):
            if not is_image_array(item) or item.dtype != np.uint8:
                raise ConfigError(
                    f"query {name} is an array of shape {item.shape} and dtype {item.dtype}: an image must "
                    "be H x W x 3 (RGB) or H x W uint8; a feature vector goes to vector_search(vec=...)"
                )
            rgb = np.repeat(item[:, :, None], 3, axis=2) if item.ndim == 2 else item
            return resize_frame(rgb, size)
        if hasattr(item, "mode") and hasattr(item, "resize"):  # a PIL image
            return picture_pixels(item, size)
        raise ConfigError(
            f"cannot search for a {type(item).__name__}: give an image file, a list of files, a PIL image, "
            "a numpy image or a feature vector"
        )


def is_image_array(array: np.ndarray) -> bool:
    """An array that holds pixels (H x W x 3, or H x W of uint8), not feature vectors."""
    return (array.ndim == 3 and array.shape[2] == 3) or (array.ndim == 2 and array.dtype == np.uint8)


def query_name(item: Any, position: int, count: int) -> str:
    """The ``from`` of a query: its file, else query_image (numbered when there are several)."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    return QUERY_IMAGE if count == 1 else f"{QUERY_IMAGE}_{position}"


# fastdup's v0 calls keep the loaded search in the module, as fastdup does.
_current: Searcher | None = None


def init_search(
    k: int,
    work_dir: str | os.PathLike,
    d: int | None = None,
    model_path: str | None = None,
    verbose: bool = False,
    license: str = "",
    store_int: int = 0,
    turi_param: str = "",
    threshold: float | None = None,
    high_accuracy: bool = False,
) -> int:
    """fastdup's init_search: load the finished run in ``work_dir`` (its model and saved
    index) for search() and vector_search(); returns 0 as fastdup does. ``threshold``:
    keep only neighbours at least this similar (default: all k)."""
    global _current
    _current = make_searcher(
        k, work_dir, d, model_path, license, store_int, turi_param, threshold, high_accuracy
    )
    if verbose:
        log.info("init_search: %d images of %s ready", len(_current.index.names), _current.work.location)
    return 0


def make_searcher(
    k, work_dir, d=None, model_path=None, license="", store_int=0, turi_param="", threshold=None,
    high_accuracy=False, storage: StorageOptions | None = None,
) -> Searcher:  # fmt: skip
    """A Searcher from fastdup's init_search arguments; the ones this tool has no use for
    are refused when they would change the answer."""
    del license  # nothing here needs one
    if high_accuracy:
        raise ConfigError(
            "init_search(high_accuracy=True) is not supported: search uses the model the run embedded with"
        )
    if turi_param:
        raise ConfigError(f"init_search(turi_param={turi_param!r}) is not supported: give no turi_param")
    return Searcher(k, work_dir, d, model_path, threshold, bool(store_int), storage)


def current() -> Searcher:
    if _current is None:
        raise SearchNotReadyError("no search loaded: call fastdup_ray.init_search(k, work_dir) first")
    return _current


def search(filename: Any, img: Any = None, verbose: bool = False):
    """fastdup's search: the k nearest images of the run init_search loaded, as a pandas
    frame (``from``, ``to``, ``distance``)."""
    del verbose
    return current().search(filename, img).to_pandas()


def vector_search(filename: Any = QUERY_VECTOR, vec: Any = None, verbose: bool = False):
    """fastdup's vector_search: the k nearest images to feature vector(s) ``vec`` (d
    values or n x d), as a pandas frame (``from``, ``to``, ``distance``)."""
    del verbose
    return vector_search_of(current(), filename, vec)


def vector_search_of(searcher: Searcher, filename: Any, vec: Any):
    """fastdup's vector_search(filename, vec) on ``searcher``, as a pandas frame."""
    if vec is None:
        raise ConfigError("vector_search needs vec: a feature vector of d values or an n x d matrix")
    return searcher.vector_search(vec, filename).to_pandas()
