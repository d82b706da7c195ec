"""Deduplicated outputs: which image of each component to keep, which to remove.

Rules (``keep``): 'resolution' keeps the image with the most pixels, 'file_size' the
largest file, 'first' the first in features.dat order (the sorted listing). Ties go to
the first in that order, so the choice is repeatable.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from fastdup_ray.features import load_binary_features

KEEP_RULES = ("resolution", "file_size", "first")


def choose_keepers(components: pl.DataFrame, names: list[str], stats: pl.DataFrame | None, keep: str = "resolution") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(keep, remove) tables of ``filename,component_id``: one kept image per component."""
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    table = components.select("__id", "component_id").with_columns(pl.Series("filename", names, dtype=pl.String))
    if keep == "first":
        score = pl.lit(0)
    else:
        if stats is None:
            raise ValueError(f"keep={keep!r} needs stats.csv (written by runs that extract images)")
        table = table.join(stats.select("__id", "width", "height", "file_size"), on="__id", how="left")
        score = (pl.col("width") * pl.col("height")) if keep == "resolution" else pl.col("file_size")
    ranked = table.with_columns(score.fill_null(0).alias("_score")).sort(["component_id", "_score", "__id"], descending=[False, True, False])
    first = ranked.group_by("component_id", maintain_order=True).head(1)
    kept_ids = set(first["__id"].to_list())
    keepers = ranked.filter(pl.col("__id").is_in(kept_ids)).sort("__id").select("filename", "component_id")
    removed = ranked.filter(~pl.col("__id").is_in(kept_ids)).sort("__id").select("filename", "component_id")
    return keepers, removed


def write_keep_remove(work_dir: str, keep: str = "resolution") -> tuple[Path, Path]:
    """keep.csv and remove.csv in ``work_dir`` from a finished run's components."""
    work = Path(work_dir)
    names, _ = load_binary_features(work)
    components = pl.read_csv(work / "connected_components.csv")
    stats = pl.read_csv(work / "stats.csv") if (work / "stats.csv").exists() else None
    keepers, removed = choose_keepers(components, names, stats, keep)
    keepers.write_csv(work / "keep.csv")
    removed.write_csv(work / "remove.csv")
    return work / "keep.csv", work / "remove.csv"


def webdataset_key(member: str) -> tuple[str, str]:
    """(key, extension) of a webdataset member: '000000001.jpg' -> ('000000001', 'jpg');
    the key runs to the first dot of the file name, as webdataset groups samples."""
    folder, _, base = member.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def write_deduplicated_webdataset(work_dir: str, out_dir: str, keep: str = "resolution", storage=None) -> list[Path]:
    """Copy every tar shard of a finished run to ``out_dir`` without the samples whose
    image is on the remove list; kept samples keep all their members (.txt, .json, ...).
    Each shard is written under a temporary name and renamed when complete."""
    import os
    import tarfile

    import webdataset

    from fastdup_ray.sources.archives import open_archive_stream
    from fastdup_ray.sources.items import kind_of

    _, remove_csv = write_keep_remove(work_dir, keep)
    removed = set(pl.read_csv(remove_csv, infer_schema=False)["filename"].to_list())
    names, _ = load_binary_features(work_dir)
    archives = sorted({name.rsplit(".tar/", 1)[0] + ".tar" for name in names if ".tar/" in name})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for archive in archives:
        target = out / archive.rsplit("/", 1)[-1]
        temp = target.with_name(f".{target.name}.tmp")
        with open_archive_stream(archive, storage, None) as stream, tarfile.open(fileobj=stream, mode="r|*") as source, \
                webdataset.TarWriter(str(temp), encoder=False) as sink:
            sample: dict[str, bytes] = {}
            drop = False

            def flush():
                if sample and not drop:
                    sink.write(dict(sample))

            for member in source:
                if not member.isfile():
                    continue
                key, ext = webdataset_key(member.name)
                if sample and key != sample["__key__"]:
                    flush()
                    sample, drop = {}, False
                sample["__key__"] = key
                sample[ext] = source.extractfile(member).read()
                if kind_of(member.name) == "image" and f"{archive}/{member.name}" in removed:
                    drop = True
            flush()
        os.replace(temp, target)
        written.append(target)
    return written
