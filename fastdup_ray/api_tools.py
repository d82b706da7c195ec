"""The v1 object's tools over a finished run, kept out of api.py: ``fd.init_search`` /
``fd.search`` / ``fd.vector_search`` (actions/search.py), ``fd.explore()``
(reports/explore.py), and fastdup's model-zoo calls this tool does not have
(``fd.caption``, ``fd.enrich``: out_of_reach.py), each a thin call; and
``fd.feature_vectors`` (the run's vectors of some of its files)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastdup_ray.errors import InputError, SearchNotReadyError

if TYPE_CHECKING:
    import numpy as np


class RunTools:
    """Mixed into :class:`fastdup_ray.api.Fastdup` (which gives ``work_dir``, ``_finished``
    and ``embeddings``)."""

    _searcher = None

    def feature_vectors(self, img_paths=None) -> tuple[np.ndarray, list[str]]:
        """(embeddings, files) as fastdup's: the run's vectors of ``img_paths`` (files, or a
        frame with filename; all when None). Images outside the run need fd.run() first."""
        files, vectors = self.embeddings()
        if img_paths is None:
            return vectors, files
        wanted = list(img_paths["filename"]) if hasattr(img_paths, "columns") else list(img_paths)
        row_of = {name: row for row, name in enumerate(files)}
        absent = [str(name) for name in wanted if str(name) not in row_of]
        if absent:
            raise InputError(
                f"{len(absent)} images are not in the run ({absent[0]!r}, ...): fd.run() them first"
            )
        rows = [row_of[str(name)] for name in wanted]
        return vectors[rows], [files[row] for row in rows]

    def init_search(
        self, k: int, verbose: bool = False, license: str = "", threshold: float | None = None
    ) -> int:
        """Load this run's model and saved index for fd.search() / fd.vector_search(), each
        query answered with its ``k`` nearest images; returns 0 as fastdup does."""
        from fastdup_ray.actions.search import make_searcher

        work = self._finished()
        self._searcher = make_searcher(k, self.work_dir, threshold=threshold, storage=work.options)
        return 0

    def search(self, filename: Any, img: Any = None, verbose: bool = False):
        """The k nearest images of the run to an image file (or a list, a PIL image, a numpy
        image, a feature vector): a frame of ``from``, ``to``, ``distance``."""
        return self._loaded_search().search(filename, img).to_pandas()

    def vector_search(self, filename: Any = "query_vector", vec: Any = None, verbose: bool = False):
        """The k nearest images of the run to feature vector(s) ``vec`` (d values or n x d)."""
        from fastdup_ray.actions.search import vector_search_of

        return vector_search_of(self._loaded_search(), filename, vec)

    def _loaded_search(self):
        if self._searcher is None:
            raise SearchNotReadyError("no search loaded: call fd.init_search(k) first")
        return self._searcher

    def explore(
        self,
        verbose: bool = False,
        port: int = 0,
        open_browser: bool | None = None,
        block: bool | None = None,
    ):
        """Serve this run's galleries and index page on http://127.0.0.1:<port>/ (building
        them when missing); see fastdup_ray.explore."""
        from fastdup_ray.reports.explore import explore

        return explore(self.work_dir, port=port, open_browser=open_browser, block=block, verbose=verbose)

    def caption(self, *args: Any, **kwargs: Any):
        """fastdup's captioning / VQA models are not in fastdup_ray (one error line says what
        to use)."""
        from fastdup_ray.out_of_reach import refuse

        refuse("fd.caption")

    def enrich(self, *args: Any, **kwargs: Any):
        """fastdup's zero-shot enrichment models are not in fastdup_ray (one error line says
        what to use)."""
        from fastdup_ray.out_of_reach import refuse

        refuse("fd.enrich")
