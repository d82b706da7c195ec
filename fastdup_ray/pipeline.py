"""The whole job: list -> plan units -> extract (Ray Data) -> kNN -> components -> output files.

Only wiring lives here; each stage is its own module.

run_mode 0: extract, then reduce over this run's shards. run_mode 1: extract only (the
per-node step of a big run, sliced with min_offset/max_offset). run_mode 2: reduce over
every finished shard in work_dir (or a features.dat named as work_dir). run_mode 3:
extract the images of test_dir (into work_dir/test_features) and score them against
work_dir's saved index; run_mode 4: the same with features already extracted in
test_dir; both write their tables to work_dir/test_results, leaving the train run's as
they are. A rerun reuses the shards whose inputs are unchanged (see resume.py); a
rerun on another input_dir is refused unless ``overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import sys
import tempfile
from typing import Any

import numpy as np

from fastdup_ray.config import RunConfig
from fastdup_ray.engine import EngineSlot, available_cpus, choose, ray_cluster_given, ray_job_single_thread
from fastdup_ray.errors import ConfigError, InputError
from fastdup_ray.map.crops import Boxes, Margin, with_boxes
from fastdup_ray.map.embed import INSTALL_GPU, Embedder
from fastdup_ray.map.extract import extract_units, write_listing_shard
from fastdup_ray.map.plan import DecodeSettings, EmbedSettings, MapPlan, MapSettings
from fastdup_ray.map.progress import Progress
from fastdup_ray.map.sources import ReadSettings, list_inputs, plan_units
from fastdup_ray.map.sources.items import ARCHIVE_EXTENSIONS
from fastdup_ray.params import PARAMS
from fastdup_ray.reduce import outputs
from fastdup_ray.reduce.distributed import clear_outputs
from fastdup_ray.reduce.index import check_index_spec, factory_string, use_threads
from fastdup_ray.reduce.saved_index import (
    remove_saved_index,
    saved_index_shards,
    search_saved_index,
)
from fastdup_ray.reduce.strategy import ReduceResult, ReduceSettings, reduce_shards
from fastdup_ray.rundir import layout, results
from fastdup_ray.rundir.resume import check_no_overlap, plan_resume
from fastdup_ray.rundir.shards import (
    BAD_FILE,
    SHARD_SUFFIXES,
    adopt_plain_features,
    finished_shards,
    list_shards,
    load_binary_features,
    load_names,
    load_shards,
    read_marker,
    remove_shard,
    unit_rows,
    write_merged_bad_list,
)
from fastdup_ray.rundir.storage import is_remote
from fastdup_ray.rundir.summary import RunSummary, count_images, stage_timer
from fastdup_ray.rundir.workdir import WorkDir, run_lock

log = logging.getLogger("fastdup_ray")


def setup_logging(verbose: bool) -> None:
    """Give the package logger a console handler unless the application configured one."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("fastdup_ray: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def run(input_dir: str | list[str], work_dir: str, **params: Any) -> RunSummary:
    """Find duplicates, outliers and components among the images under ``input_dir``.

    Parameters use fastdup's names (threshold, lower_threshold, nearest_neighbors_k or k,
    turi_param, num_images, verbose, d, model_path, compute, run_mode, min_offset,
    max_offset, ...); see RunConfig. Outputs are written to ``work_dir``.
    """
    return run_config(RunConfig.from_kwargs(input_dir, work_dir, **params))


def comparable_input(input_dir) -> str | list[str]:
    """input_dir as a rerun compares it: local paths made absolute."""

    def one(location: str) -> str:
        return location.rstrip("/") if is_remote(location) else os.path.abspath(location)

    return [one(str(x)) for x in input_dir] if isinstance(input_dir, (list, tuple)) else one(str(input_dir))


def check_resume_settings(work: WorkDir, config: RunConfig) -> None:
    """A work_dir holds the shards of one input_dir, one model and one set of settings;
    mixing them would corrupt the kNN. ``overwrite`` clears an earlier run instead."""
    if config.overwrite:
        clear_run(work)
        return
    try:
        previous = results.read_config(work, missing_ok=True)
    except InputError:
        previous = None  # unreadable: no record, so shards here are refused below; none, rewritten
    if previous is None:
        if list_shards(work):
            raise ConfigError(
                f"work_dir {work.location} holds features shards of no recorded run (your own features?); "
                "use another work_dir, or overwrite=True (--overwrite) to clear them"
            )
        return
    if "input_dir" in previous and comparable_input(previous["input_dir"]) != comparable_input(
        config.input_dir
    ):
        raise ConfigError(
            f"work_dir {work.location} holds a run of input_dir {previous['input_dir']!r}, not "
            f"{config.input_dir!r}: "
            "use another work_dir, or overwrite=True (--overwrite) to clear that run first"
        )
    current = config.extraction_settings()
    different = {
        k: (previous.get(k), v) for k, v in current.items() if k in previous and previous.get(k) != v
    }
    if different:
        text = ", ".join(
            f"{k}: {old!r} in {work.path(layout.CONFIG_FILE)} but {new!r} now"
            for k, (old, new) in different.items()
        )
        raise ConfigError(
            f"work_dir already holds shards made with other settings ({text}); use a new work_dir, or "
            "overwrite=True (--overwrite)"
        )


def clear_run(work: WorkDir) -> None:
    """Remove everything an earlier run wrote to work_dir (and nothing else of the folder)."""
    outputs_of_a_run = {layout.CONFIG_FILE, *layout.OUTPUT_FILES, layout.KEEP_FILE, layout.REMOVE_FILE}
    for name in work.names():
        if name in outputs_of_a_run or name.endswith(SHARD_SUFFIXES):
            work.remove(name)
    remove_saved_index(work)
    clear_outputs(work)  # a distributed reduce's parts and edges too
    for folder in (layout.TEST_FEATURES_DIR, layout.TEST_RESULTS_DIR):
        work.remove_tree(folder)
    log.info("overwrite: cleared the earlier run in %s", work.location)


def default_cache_dir() -> str:
    """``<temp>/fastdup_ray_cache-<uid>``, private to this user (mode 0700). A path there
    that is a link, or not this user's private folder, is refused: someone could have
    planted it to read or redirect what delete_img=0 writes."""
    path = os.path.join(tempfile.gettempdir(), f"fastdup_ray_cache-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if (
        stat.S_ISLNK(info.st_mode)
        or not stat.S_ISDIR(info.st_mode)
        or info.st_uid != os.getuid()
        or stat.S_IMODE(info.st_mode) & 0o077
    ):
        raise InputError(
            f"the default cache folder {path} is not a private folder of this user (a link, another owner, "
            "or open to others); remove it, or give cache_dir"
        )
    return path


def prepare_cache_dir(config: RunConfig) -> str | None:
    """The cache folder of delete_tar=0 / delete_img=0 (the user's, created private, or the
    default); None when the run keeps nothing, so nothing is created."""
    if config.delete_tar and config.delete_img:
        return None
    if not config.cache_dir:
        return default_cache_dir()
    os.makedirs(config.cache_dir, mode=0o700, exist_ok=True)
    return config.cache_dir


def work_dir_of(config: RunConfig) -> tuple[str, list[str] | None]:
    """(folder, shard prefixes) for work_dir: a path to a features file (fastdup's own
    ``run_mode=2, work_dir='x/features.dat'``) names its folder and that one shard."""
    location = config.work_dir
    if config.run_mode == 2 and location.endswith("features.dat") and not location.endswith("/"):
        folder, name = os.path.split(location) if not is_remote(location) else location.rsplit("/", 1)
        if is_remote(location) or os.path.isfile(location):
            return folder or ".", [name[: -len("features.dat")]]
    return location, None


def check_index_settings(config: RunConfig, d: int) -> None:
    """An index faiss cannot build is refused before extraction, not after it."""
    check_index_spec(
        factory_string(config.nn_provider, config.nnf_mode, config.nnmodel),
        d,
        "nnmodel" if config.nn_provider == "turi" else "nnf_mode",
    )


def use_this_nodes_cores() -> None:
    """A ``ray job submit`` driver searches on its node's cores, not Ray's default one."""
    if ray_job_single_thread():
        threads = available_cpus()
        use_threads(threads)
        log.info(
            "nearest-neighbour search on %d threads (Ray starts a job's driver with "
            "OMP_NUM_THREADS=1; set it in the job's runtime_env env_vars to choose)",
            threads,
        )


def run_config(
    config: RunConfig, rejected: list[tuple[str, str]] | tuple = (), boxes: Boxes | None = None
) -> RunSummary:
    """Run ``config``. ``rejected``: (location, reason) of inputs known bad before listing
    (annotation names the object API found nowhere); they join the run's bad list.
    ``boxes``: the bounding boxes of each image location, each box a row of the run."""
    setup_logging(config.verbose)
    use_this_nodes_cores()
    location, named = work_dir_of(config)
    if config.run_mode != 2:
        check_index_settings(config, config.d)
    work = WorkDir(location, config.storage_options())
    summary = RunSummary(work_dir=work.location if work.remote else os.path.abspath(location))
    engines = EngineSlot(config.executor, config.num_threads, config.verbose)
    try:
        with run_lock(work):
            work.remove_leftovers()
            run_mode(config, work, summary, named, engines, rejected, boxes)
    finally:
        engines.close()
        work.close()
    for line in summary.lines():
        log.info(line)
    return summary


def run_mode(
    config: RunConfig,
    work: WorkDir,
    summary: RunSummary,
    named: list[str] | None,
    engines: EngineSlot,
    rejected=(),
    boxes: Boxes | None = None,
) -> None:
    """The stages of the run mode asked for."""
    if config.run_mode in (2, 3, 4):
        prefixes = named if named is not None else (list_shards(work) or adopt_plain_features(work))
        if not prefixes:
            raise InputError(
                f"run_mode={config.run_mode} needs finished features shards in {work.location}, found none"
            )
        markers = {p: read_marker(work, p) or {} for p in prefixes}
        check_no_overlap(markers)
        if config.run_mode == 2:
            count_images(summary, list(markers.values()))
            summary.shards = len(prefixes)
            require_an_image(work, prefixes, summary, work.location)
            add_reduce(
                summary, reduce_shards(reduce_settings(config, config.compute), work, prefixes, engines)
            )
        else:
            score_test_set(config, work, prefixes, summary, engines)
        return
    prefixes, compute = extract(config, work, summary, engines, rejected, boxes)
    if config.run_mode == 0 and summary.good:
        add_reduce(summary, reduce_shards(reduce_settings(config, compute), work, prefixes, engines))
    else:
        write_merged_bad_list(work, list_shards(work))
    require_an_image(work, prefixes, summary, config.input_dir)


def reduce_settings(config: RunConfig, compute: str) -> ReduceSettings:
    """The reduce's settings: every parameter params.py gives to the reduce stage."""
    given = {p.name: getattr(config, p.name) for p in PARAMS if p.stage == "reduce"}
    return ReduceSettings(**given, d=config.d, compute=compute)


def add_reduce(summary: RunSummary, result: ReduceResult) -> None:
    """What the reduce did, into the run's summary."""
    summary.similar_pairs, summary.outlier_rows = result.similar_pairs, result.outlier_rows
    summary.components, summary.grouped_images = result.components, result.grouped_images
    summary.seconds.update(result.seconds)


def require_an_image(work: WorkDir, prefixes: list[str], summary: RunSummary, where) -> None:
    """A run that read no image fails, naming the first input it tried and why (a run of
    nothing but bad rows must not look like a run that found no duplicates)."""
    if summary.good:
        return
    bad = results.read_bad_list(work, prefixes)
    tried = f"; the first, {bad['filename'][0]}: {bad['error'][0]}" if bad.height else ""
    raise InputError(
        f"no image could be read from {where}: {summary.bad} inputs, all bad{tried} (every reason in "
        f"{work.path(BAD_FILE)})"
    )


def decide_compute(config: RunConfig, engines: EngineSlot, locations: list[str]) -> str:
    """'gpu' only when the engine that will embed has a GPU where CUDA really starts;
    decided once for the run, before config.json records the model, so every shard is
    embedded by the same model (the CPU default rather than a slow fp16 one on CPU)."""
    if config.compute != "gpu" or not locations:
        return config.compute
    from fastdup_ray.map.embed import cuda_problem

    if choose(config.executor, "gpu", locations) == "ray" and not ray_cluster_given() and cuda_problem():
        problem = cuda_problem()  # no cluster, and CUDA cannot start here: no Ray start to learn that
    else:
        engine = engines.get("gpu", locations)
        no_gpu = f"no GPU was found ({INSTALL_GPU}, or give Ray a node with one)"
        problem = engine.cuda_problem() if engine.resources.gpus else no_gpu
    if problem is None:
        return "gpu"
    log.warning(
        "compute='gpu' but %s; embedding on CPU with %s",
        problem,
        os.path.basename(dataclasses.replace(config, compute="cpu").model_file()),
    )
    return "cpu"


def extract(
    config: RunConfig, work: WorkDir, summary: RunSummary, engines: EngineSlot, rejected=(), boxes=None
) -> tuple[list[str], str]:
    """Plan the units, reuse the shards of unchanged inputs, remove stale ones, extract
    the rest on the run's engine; returns this run's shard prefixes and the compute used."""
    cache_dir = prepare_cache_dir(config)
    with stage_timer(summary, "list"):
        exclude = ([] if work.remote else [work.location]) + ([cache_dir] if cache_dir else [])
        listing = list_inputs(config.input_dir, config.storage_options(), exclude=exclude)
        listing.bad = sorted(listing.bad + list(rejected))
        units = plan_units(
            listing, config.shard_size, config.min_offset, config.max_offset, config.num_images
        )
        if boxes is not None:
            units = with_boxes(units, boxes, ARCHIVE_EXTENSIONS)
    log.info(
        "found %d inputs (%d archive or Parquet files, %d image/video files) -> %d shards",
        len(listing),
        len(listing.archives),
        len(listing.files),
        len(units),
    )
    if not units and (config.min_offset or config.max_offset is not None):
        inputs = len(listing.archives) + len(listing.files[: config.num_images or None])
        raise ConfigError(
            f"min_offset={config.min_offset} (max_offset={config.max_offset}) selects none of the {inputs} "
            f"inputs of {config.input_dir} (offsets 0 to {inputs - 1})"
        )
    locations = [location for unit in units for location in unit.locations]
    compute = decide_compute(config, engines, locations)
    settings = config if compute == config.compute else dataclasses.replace(config, compute=compute)
    # Load the model once here: a wrong model_path or d fails before any worker starts.
    image_size = Embedder(settings.model_file(), d=config.d, compute="cpu").image_size
    check_resume_settings(work, settings)
    work.write_bytes(layout.CONFIG_FILE, settings.to_json().encode())
    markers, complete = finished_shards(work, config.d)
    whole_run = config.min_offset == 0 and config.max_offset is None
    resume = plan_resume(units, markers, complete, whole_run, keep=frozenset({layout.LISTING_SHARD}))
    plan = MapPlan(map_settings(settings, image_size, cache_dir), tuple(resume.todo))
    if resume.todo:
        engine = engines.get(compute, locations)
        engine.warm_up(plan)  # workers start and load the model while stale shards are cleared
    for prefix in resume.stale + [u.name for u in resume.todo if u.name in markers]:
        remove_shard(work, prefix)  # the marker first: never a finished-looking stale shard
    if resume.stale:
        log.info("removed %d shards of inputs that are gone or now in other shards", len(resume.stale))
    prefixes = [u.name for u in units]
    remove_shard(work, layout.LISTING_SHARD)
    if listing.bad:
        write_listing_shard(work, config.d, layout.LISTING_SHARD, listing.bad)
        prefixes.append(layout.LISTING_SHARD)
    summary.shards, summary.skipped_shards = len(prefixes), len(resume.reused)
    if resume.reused:
        log.info(
            "%d of %d shards already finished from the same inputs in %s; skipping them",
            len(resume.reused),
            len(units),
            work.location,
        )
    if resume.todo:
        files_only = all(u.kind == "files" for u in resume.todo)
        progress = Progress(
            len(resume.todo),
            len(resume.reused),
            sum(u.rows for u in resume.todo) if files_only else None,
        )
        try:
            with stage_timer(summary, "extract"):
                extracted = extract_units(engines.get(compute, locations), plan, work, progress)
        finally:
            progress.close()
        extracted.raise_if_failed()  # no reduce while a shard is missing; a rerun extracts it
    if not config.delete_tar or not config.delete_img:
        log.info("kept downloaded archives / extracted images under %s", cache_dir)
    prefixes.sort()
    count_images(summary, [read_marker(work, p) or {} for p in prefixes])
    return prefixes, compute


def map_settings(config: RunConfig, image_size: int, cache_dir: str | None) -> MapSettings:
    """What the map stages need of ``config`` (its compute already decided)."""
    read = ReadSettings(
        storage=config.storage_options(),
        cache_dir=cache_dir,
        keep_archives=not config.delete_tar,
        keep_images=not config.delete_img,
        video_fps=config.video_fps,
        max_items_per_archive=config.num_images,
    )
    return MapSettings(
        read=read,
        decode=DecodeSettings(
            image_size,
            config.thumbnail_size,
            Margin(config.augmentation_additive_margin, config.augmentation_horiz, config.augmentation_vert),
        ),
        embed=EmbedSettings(config.model_file(), config.d, config.compute),
        batch_size=config.batch_size,
    )


def test_features(
    config: RunConfig, work: WorkDir, summary: RunSummary, d: int, engines: EngineSlot
) -> tuple[list[str], np.ndarray, str]:
    """(names, unit vectors, location) of the test set: run_mode 3 extracts test_dir into
    work_dir/test_features (a cache that follows the resume rule; another test_dir
    replaces it), run_mode 4 reads the features already in test_dir."""
    if config.run_mode == 4:
        names, vectors = load_binary_features(config.test_dir, d=d)
        summary.good = len(names)
        return names, unit_rows(vectors), config.test_dir
    test_work = WorkDir(work.path(layout.TEST_FEATURES_DIR), config.storage_options())
    previous = results.read_config(test_work, missing_ok=True) or {}
    replaced = comparable_input(previous.get("input_dir", config.test_dir)) != comparable_input(
        config.test_dir
    )
    test_config = dataclasses.replace(
        config,
        input_dir=config.test_dir,
        run_mode=1,
        min_offset=0,
        max_offset=None,
        overwrite=replaced or config.overwrite,
    )
    test_summary = RunSummary(work_dir=test_work.location)
    test_prefixes, _ = extract(test_config, test_work, test_summary, engines)
    write_merged_bad_list(test_work, test_prefixes)
    summary.seconds.update({f"test_{k}": v for k, v in test_summary.seconds.items()})
    summary.good, summary.bad = test_summary.good, test_summary.bad
    names, vectors = load_shards(test_work, test_prefixes, d, normalize=True)
    return names, vectors, test_work.location


def score_test_set(
    config: RunConfig, work: WorkDir, prefixes: list[str], summary: RunSummary, engines: EngineSlot
) -> None:
    """run_mode 3/4: every test image against the saved index (one shard at a time when
    it is sharded, so only one shard's vectors are in memory). Writes test_results/:
    similarity.csv pairs go from a test image to a train image, outliers.csv lists test
    images far from all; the train run's own tables are left as they are."""
    markers = [read_marker(work, p) or {} for p in prefixes]
    d = markers[0].get("d", config.d)
    with stage_timer(summary, "load"):
        train_names = load_names(work, prefixes)
        saved_index_shards(
            work, prefixes, [m.get("good", 0) for m in markers]
        )  # no index: say so before extracting
    test_names, test, test_location = test_features(config, work, summary, d, engines)
    with stage_timer(summary, "knn"):
        src, dst, sim = search_saved_index(work, prefixes, d, test, config.nearest_neighbors_k, config.nprobe)
    with stage_timer(summary, "outputs"):
        similarity = outputs.similarity_table(
            test_names, src, dst, sim, config.threshold, to_names=train_names
        )
        outliers = outputs.outliers_table(
            test_names, src, dst, sim, config.lower_threshold, to_names=train_names
        )
        test_results = WorkDir(work.path(layout.TEST_RESULTS_DIR), config.storage_options())
        test_results.write_bytes(layout.SIMILARITY_FILE, similarity.write_csv().encode("utf-8"))
        test_results.write_bytes(layout.OUTLIERS_FILE, outliers.write_csv().encode("utf-8"))
        train_location = work.location if work.remote else os.path.abspath(work.location)
        test_location = test_location if is_remote(test_location) else os.path.abspath(test_location)
        test_results.write_bytes(
            layout.TEST_RUN_FILE,
            json.dumps(
                {
                    "train_work_dir": train_location,
                    "test_features": test_location,
                    "run_mode": config.run_mode,
                },
                indent=1,
            ).encode(),
        )
    summary.similar_pairs, summary.outlier_rows = similarity.height, outliers.height
    log.info("test results in %s", test_results.location)
