"""Near-duplicate quality benchmark on real photos, with a tune half and a report half.

Builds a labelled set from a folder of photos (photoset.py): every original, and for
about half of them 1-3 edited copies (groups of up to four images). The photos are split
by name into a tune half and a report half, so no group spans both; each half is run
through fastdup_ray at the package defaults. For each half it prints

- average precision, best F1 and recall at precision >= 0.95, over all image pairs (the
  model's separating power) and over the kNN pairs a run scores, for several k;
- similarity.csv and components at a range of thresholds (the trade-off table);
- the defaults that the tune half alone picks (``choose_defaults``), and what the runs
  at the package defaults give: similarity.csv precision / recall, component purity;
- per edit type, how many copies the runs at the defaults find.

``--vs-fastdup`` runs fastdup 2.54 (installed by throughput.py into its own virtual
environment) on the same halves at its own defaults, and scores its features and its
similarity.csv and components the same way, so the two tools are compared on data that
neither was tuned on (the report half). ``--compare-models`` adds, on the report half,
the shipped int8 model against fp32 and against flip-invariant features (mean of an
image's and its mirror's embedding), with one core's model-alone img/s for each;
``--k-cost N`` the CPU time of the reduce for each k on N random vectors.

    python benchmarks/quality.py [--photos ../shared/data/imagenet-sample-dev] [--halves tune]
        [--vs-fastdup] [--compare-models] [--k-cost 20000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from photoset import DEFAULT_PHOTOS, HALVES, build_set
from throughput import all_pairs, fastdup_features, fastdup_python, fastdup_run

import fastdup_ray
from fastdup_ray.actions.evaluate import component_purity, pair_metrics, same_group_pairs
from fastdup_ray.config import DEFAULT_D, RunConfig
from fastdup_ray.reduce.graph import connected_components
from fastdup_ray.reduce.index import knn_edges
from fastdup_ray.reduce.outputs import unique_pairs

K_CHOICES = (2, 3, 4, 5, 10)
THRESHOLDS = (0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90)
PRECISION_FLOOR = 0.95
# Targets the defaults are chosen for (choose_defaults), on the tune half alone. A
# collection ten times a half's size holds about ten times the true pairs but a hundred
# times the unrelated pairs that can pass a threshold: false pairs are scaled by SCALE.
SCALE = 10
TARGET_PRECISION = 0.95
TARGET_RECALL = 0.90
TARGET_PURITY = 0.98
GRID = [round(0.50 + 0.01 * i, 2) for i in range(46)]


@dataclass
class Half:
    """One half's run: its images (in features.dat order), their vectors and ground truth."""

    name: str
    work: Path
    names: list[str]
    features: np.ndarray
    groups: np.ndarray  # ground-truth group of each image
    edits: list[str]  # 'original', 'blur', 'crop+text', ...

    @property
    def true_pairs(self) -> int:
        return same_group_pairs(self.groups)


@dataclass(frozen=True)
class Outcome:
    """What a run at (k, threshold, ccthreshold) gives, scored against the ground truth."""

    true_pairs: int  # in the ground truth
    pairs: int  # in similarity.csv
    found: int  # of those, true
    purity: float
    together: int  # pairs of images sharing a component
    found_together: int  # of those, true

    @property
    def precision(self) -> float:
        return self.found / self.pairs if self.pairs else 1.0

    @property
    def recall(self) -> float:
        return self.found / self.true_pairs

    @property
    def component_precision(self) -> float:
        return self.found_together / self.together if self.together else 1.0

    @property
    def component_recall(self) -> float:
        return self.found_together / self.true_pairs


def run_half(name: str, truth: pl.DataFrame, out: Path, model_path: str | None, precision: str) -> Half:
    """A fresh fastdup_ray run over one half's images at the package defaults."""
    work = out / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    fastdup_ray.run(str(out / "images" / name), str(work), model_path=model_path, precision=precision)
    names, features = fastdup_ray.load_binary_features(work)
    group_of = dict(zip(truth["filename"], truth["group"]))
    edit_of = dict(zip(truth["filename"], truth["transform"]))
    return Half(
        name, work, names, features, np.array([group_of[n] for n in names]), [edit_of[n] for n in names]
    )


def knn_pairs(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The unique kNN pairs (a < b) and similarities that a run with this k scores."""
    return unique_pairs(*knn_edges(features, k))


def same_component_pairs(labels: np.ndarray, groups: np.ndarray) -> tuple[int, int]:
    """(pairs of images sharing a component, of those the pairs from one group)."""
    _, comp_sizes = np.unique(labels, return_counts=True)
    _, both_sizes = np.unique(np.stack([labels, groups]), axis=1, return_counts=True)
    return int((comp_sizes * (comp_sizes - 1) // 2).sum()), int((both_sizes * (both_sizes - 1) // 2).sum())


def outcome(half: Half, pairs, threshold: float, ccthreshold: float) -> Outcome:
    """similarity.csv and components as run.py makes them from these kNN pairs."""
    a, b, sim = pairs
    kept = sim >= threshold
    joined = sim >= max(threshold, ccthreshold)  # run.py joins at both thresholds
    labels = connected_components(len(half.names), a[joined], b[joined])
    together, found_together = same_component_pairs(labels, half.groups)
    found = int((half.groups[a[kept]] == half.groups[b[kept]]).sum())
    return Outcome(
        half.true_pairs,
        int(kept.sum()),
        found,
        component_purity(labels, half.groups),
        together,
        found_together,
    )


def metrics_line(label: str, sim: np.ndarray, same: np.ndarray, total: int) -> str:
    m = pair_metrics(sim, same, total, precision_floor=PRECISION_FLOOR)
    return (
        f"| {label} | {m.average_precision:.4f} | {m.best_f1:.4f} ({m.best_f1_threshold:.2f}) | "
        f"{m.recall_at_precision:.4f} ({m.threshold_at_precision:.3f}) | {int(same.sum()) / total:.4f} |"
    )


def print_separation(half: Half) -> None:
    """AP / best F1 / recall at precision >= 0.95 over all pairs and over kNN pairs."""
    print(
        f"\n{half.name} half: pairs scored | AP | best F1 (at) | "
        f"recall at precision >= {PRECISION_FLOOR} (threshold) | true pairs scored"
    )
    print("|---|---|---|---|---|")
    a, b, sim = all_pairs(half.features)
    print(metrics_line("all pairs", sim, half.groups[a] == half.groups[b], half.true_pairs))
    for k in K_CHOICES:
        a, b, sim = knn_pairs(half.features, k)
        print(metrics_line(f"kNN pairs, k={k}", sim, half.groups[a] == half.groups[b], half.true_pairs))


def print_thresholds(half: Half, k: int, ccthreshold: float | None = None) -> None:
    """The trade-off table: similarity.csv and components at each threshold (ccthreshold =
    threshold unless given)."""
    pairs = knn_pairs(half.features, k)
    print(
        f"\n{half.name} half, k={k}: threshold | similarity.csv pairs | precision | recall | false pairs | "
        "component purity | same-component precision | recall"
    )
    print("|---|---|---|---|---|---|---|---|")
    for t in THRESHOLDS:
        o = outcome(half, pairs, t, t if ccthreshold is None else ccthreshold)
        print(
            f"| {t:.2f} | {o.pairs} | {o.precision:.4f} | {o.recall:.4f} | {o.pairs - o.found} | "
            f"{o.purity:.4f} | {o.component_precision:.4f} | {o.component_recall:.4f} |"
        )


def projected_precision(true: int, false: int) -> float:
    """Precision in a collection SCALE times this one: true pairs grow with the images,
    false ones with their square."""
    return true / (true + false * SCALE) if true + false else 1.0


def lowest_safe(grid: list[float], safe) -> float | None:
    """The lowest value of the grid from which ``safe`` holds at every higher value."""
    low = None
    for value in sorted(grid, reverse=True):
        if not safe(value):
            break
        low = value
    return low


def middle_of_band(grid: list[float], safe, complete, what: str) -> float:
    """The middle of the band where ``safe`` (precision) and ``complete`` (recall) both
    hold: as far from losing either as the tune half allows."""
    low = lowest_safe(grid, safe)
    high = max((v for v in grid if complete(v)), default=None)
    if low is None or high is None or low > high:
        raise SystemExit(
            f"no {what} meets both targets on the tune half (precision from {low}, recall up to {high})"
        )
    print(
        f"{what}: precision target holds from {low:.2f}, recall >= {TARGET_RECALL} up to {high:.2f}; "
        f"middle {(low + high) / 2:.3f}"
    )
    return round((low + high) / 2, 2)


def choose_defaults(tune: Half) -> tuple[float, int, float]:
    """Pick (threshold, k, ccthreshold) on the tune half alone, and say why.

    k: the smallest k >= 3 (a group of four needs three neighbours) whose kNN pairs hold
    >= 99.5 % of the true pairs. threshold: the middle of the band where similarity.csv
    precision projected to SCALE times the images is >= TARGET_PRECISION and recall is
    >= TARGET_RECALL. ccthreshold (not below the threshold): the middle of the band where
    purity is >= TARGET_PURITY with same-component precision projected as above >=
    TARGET_PRECISION, and same-component recall >= TARGET_RECALL.
    """
    print("\ndefaults chosen on the tune half:")
    k = next(k for k in range(3, 21) if outcome(tune, knn_pairs(tune.features, k), 0.0, 1.0).recall >= 0.995)
    pairs = knn_pairs(tune.features, k)
    at = {t: outcome(tune, pairs, t, 1.0) for t in GRID}
    threshold = middle_of_band(
        GRID,
        lambda t: projected_precision(at[t].found, at[t].pairs - at[t].found) >= TARGET_PRECISION,
        lambda t: at[t].recall >= TARGET_RECALL,
        "threshold",
    )
    cc_grid = [c for c in GRID if c >= threshold]
    cc = {c: outcome(tune, pairs, threshold, c) for c in cc_grid}
    ccthreshold = middle_of_band(
        cc_grid,
        lambda c: (
            cc[c].purity >= TARGET_PURITY
            and projected_precision(cc[c].found_together, cc[c].together - cc[c].found_together)
            >= TARGET_PRECISION
        ),
        lambda c: cc[c].component_recall >= TARGET_RECALL,
        "ccthreshold",
    )
    print(
        f"k {k} (the smallest k >= 3 whose kNN pairs hold >= 99.5% of the true pairs), "
        f"threshold {threshold:.2f}, ccthreshold {ccthreshold:.2f}"
    )
    return threshold, k, ccthreshold


def output_cells(half: Half, a: np.ndarray, b: np.ndarray, labels: np.ndarray) -> str:
    """A run's similarity.csv pairs (rows a, b of its features) and component labels,
    scored: images, true pairs, pairs, precision, recall, purity, same-component precision
    and recall."""
    found = int((half.groups[a] == half.groups[b]).sum())
    together, true_together = same_component_pairs(labels, half.groups)
    return (
        f"| {half.name} | {len(half.names)} | {half.true_pairs} | {len(a)} | "
        f"{found / max(1, len(a)):.4f} | {found / half.true_pairs:.4f} | "
        f"{component_purity(labels, half.groups):.4f} | {true_together / max(1, together):.4f} | "
        f"{true_together / half.true_pairs:.4f} |"
    )


def print_run(half: Half, config: RunConfig) -> None:
    """similarity.csv and components of the run itself (package defaults), checked against
    the same numbers computed here from its features."""
    similarity = pl.read_csv(half.work / "similarity.csv")
    index = {n: i for i, n in enumerate(half.names)}
    a = np.array([index[n] for n in similarity["from"]], dtype=np.int64)
    b = np.array([index[n] for n in similarity["to"]], dtype=np.int64)
    labels = pl.read_csv(half.work / "connected_components.csv")["component_id"].to_numpy()
    recomputed = outcome(
        half, knn_pairs(half.features, config.nearest_neighbors_k), config.threshold, config.ccthreshold
    )
    agrees = recomputed.pairs == len(similarity) and recomputed.purity == component_purity(
        labels, half.groups
    )
    print(f"{output_cells(half, a, b, labels)} {'yes' if agrees else 'NO'} |")


def fastdup_half(half: Half, truth: pl.DataFrame, out: Path, python: Path) -> Half:
    """fastdup 2.54 at its own defaults on the images of ``half``: its features (its own
    model's, L2-normalised for the cosine it uses) in its row order, with the ground truth."""
    work = out / "fastdup-work" / half.name
    fastdup_run(python, out / "images" / half.name, work, len(half.names))
    names, vectors = fastdup_features(work)
    group_of = dict(zip(truth["filename"], truth["group"]))
    edit_of = dict(zip(truth["filename"], truth["transform"]))
    if len(names) != len(half.names):
        print(f"fastdup 2.54 embedded {len(names)} of the {len(half.names)} images of the {half.name} half")
    return Half(
        f"fastdup 2.54 on the {half.name}",
        work,
        names,
        vectors,
        np.array([group_of[n] for n in names]),
        [edit_of[n] for n in names],
    )


def print_fastdup_run(theirs: Half) -> None:
    """fastdup's own similarity.csv (each pair once, whichever way round it wrote it) and
    connected_components.csv (``__id``: its features row), scored like ours."""
    similarity = pl.read_csv(theirs.work / "similarity.csv")
    index = {n: i for i, n in enumerate(theirs.names)}
    rows = np.array([[index[f], index[t]] for f, t in zip(similarity["from"], similarity["to"])], np.int64)
    pairs = np.unique(np.sort(rows.reshape(-1, 2), axis=1), axis=0)
    components = pl.read_csv(theirs.work / "connected_components.csv").sort("__id")
    labels = np.full(len(theirs.names), -1, dtype=np.int64)
    labels[components["__id"].to_numpy()] = components["component_id"].to_numpy()
    # An image fastdup left out of its components is a component of its own.
    alone = labels < 0
    labels[alone] = labels.max(initial=0) + 1 + np.arange(int(alone.sum()))
    print(output_cells(theirs, pairs[:, 0], pairs[:, 1], labels))


def edit_rows(half: Half) -> pl.DataFrame:
    """One row per copy: its edit, whether similarity.csv pairs it with its original or with
    any image of its group, whether it shares its original's component, and its similarity."""
    similarity = pl.read_csv(half.work / "similarity.csv")
    index = {n: i for i, n in enumerate(half.names)}
    linked = {(index[f], index[t]) for f, t in zip(similarity["from"], similarity["to"])}
    linked |= {(t, f) for f, t in linked}
    labels = dict(
        zip(*pl.read_csv(half.work / "connected_components.csv").select("__id", "component_id").to_numpy().T)
    )
    original = {int(half.groups[i]): i for i, e in enumerate(half.edits) if e == "original"}
    rows = []
    for i, edit in enumerate(half.edits):
        if edit == "original":
            continue
        orig = original[int(half.groups[i])]
        mates = [j for j in np.flatnonzero(half.groups == half.groups[i]) if j != i]
        rows.append(
            {
                "edit": edit if "+" not in edit else "pair of edits",
                "with_original": (i, orig) in linked,
                "with_group": any((i, j) in linked for j in mates),
                "same_component": bool(labels[i] == labels[orig]),
                "similarity": float(half.features[i] @ half.features[orig]),
            }
        )
    return pl.DataFrame(rows)


def print_edits(half: Half) -> None:
    rows = edit_rows(half)
    table = (
        rows.group_by("edit")
        .agg(
            pl.len().alias("copies"),
            pl.col("with_original").sum(),
            pl.col("with_group").sum(),
            pl.col("same_component").sum(),
            pl.col("similarity").min().alias("min"),
            pl.col("similarity").median().alias("median"),
        )
        .sort("median")
    )
    print(
        f"\n{half.name} half at the defaults: edit | copies | in similarity.csv with its original | "
        "with any of its group | in its original's component | similarity to original min / median"
    )
    print("|---|---|---|---|---|---|")
    for r in table.iter_rows(named=True):
        print(
            f"| {r['edit']} | {r['copies']} | {r['with_original']} | {r['with_group']} | "
            f"{r['same_component']} | {r['min']:.3f} / {r['median']:.3f} |"
        )
    print(
        f"| all copies | {len(rows)} | {rows['with_original'].sum()} | {rows['with_group'].sum()} | "
        f"{rows['same_component'].sum()} | "
        f"{rows['similarity'].min():.3f} / {rows['similarity'].median():.3f} |"
    )


def decode_all(paths: list[str], size: int) -> np.ndarray:
    from fastdup_ray.map.decode import decode_image

    return np.stack([decode_image(Path(p).read_bytes(), size) for p in paths])


def embed_variant(model, pixels: np.ndarray, mirrored: bool, batch: int = 64) -> np.ndarray:
    """The model's unit vectors; with ``mirrored`` the normalised mean of each image's and
    its mirror's vectors, which a flip leaves unchanged."""
    parts = []
    for first in range(0, len(pixels), batch):
        chunk = pixels[first : first + batch]
        vectors = model.embed(chunk)
        if mirrored:
            vectors = vectors + model.embed(np.ascontiguousarray(chunk[:, :, ::-1]))
        parts.append(vectors)
    vectors = np.concatenate(parts)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def one_core_rate(model, pixels: np.ndarray, mirrored: bool, repeats: int = 3) -> float:
    """img/s of the model alone on one core (one ONNX Runtime thread), best of ``repeats``."""
    embed_variant(model, pixels[:64], mirrored)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        embed_variant(model, pixels, mirrored)
        best = min(best, time.perf_counter() - start)
    return len(pixels) / best


def compare_models(half: Half, k: int) -> None:
    """Item 2 of issue 15: model variants on one half, all pairs and kNN pairs at k."""
    from fastdup_ray.map.embed import Embedder, default_model_path

    print(
        f"\n{half.name} half, model variants: model | AP all pairs | "
        f"recall at precision >= {PRECISION_FLOOR} all pairs | "
        f"AP kNN pairs k={k} | recall at precision >= {PRECISION_FLOOR} kNN k={k} | "
        "one core img/s (model alone)"
    )
    print("|---|---|---|---|---|---|")
    for precision in ("int8", "fp32"):
        model = Embedder(default_model_path(precision))
        pixels = decode_all(half.names, model.image_size)
        for mirrored in (False, True):
            features = embed_variant(model, pixels, mirrored)
            a, b, sim = all_pairs(features)
            every = pair_metrics(sim, half.groups[a] == half.groups[b], half.true_pairs, PRECISION_FLOOR)
            a, b, sim = knn_pairs(features, k)
            knn = pair_metrics(sim, half.groups[a] == half.groups[b], half.true_pairs, PRECISION_FLOOR)
            label = f"{precision} {model.image_size} px" + (", flip-invariant" if mirrored else "")
            print(
                f"| {label} | {every.average_precision:.4f} | {every.recall_at_precision:.4f} | "
                f"{knn.average_precision:.4f} | "
                f"{knn.recall_at_precision:.4f} | {one_core_rate(model, pixels, mirrored):.0f} |",
                flush=True,
            )


def print_k_cost(n: int, d: int = DEFAULT_D, rounds: int = 3) -> None:
    """CPU seconds of the reduce after extraction (exact kNN, pairs, similarity and
    outliers tables, components) on n clustered random vectors, for each k: what k costs.
    CPU time, the best of ``rounds`` with the k alternating, as other work shares the machine."""
    from fastdup_ray.reduce.outputs import outliers_table, similarity_table

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, d))
    vectors = centres[rng.integers(0, 20, n)] + 9 * rng.normal(size=(n, d)) / np.sqrt(d)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    names = [f"{i}.jpg" for i in range(n)]
    best: dict[int, float] = {}
    for _ in range(rounds):
        for k in K_CHOICES:
            start = time.process_time()
            src, dst, sim = knn_edges(vectors, k)
            a, b, pair_sim = unique_pairs(src, dst, sim)
            similarity_table(names, a, b, pair_sim, 0.65)
            outliers_table(names, src, dst, sim, 0.05)
            connected_components(n, a[pair_sim >= 0.7], b[pair_sim >= 0.7])
            best[k] = min(best.get(k, float("inf")), time.process_time() - start)
    print(
        f"\nreduce after extraction on {n} vectors (exact kNN, pairs, tables, components), "
        f"CPU s, best of {rounds}: " + ", ".join(f"k={k} {t:.2f}" for k, t in best.items())
    )


def print_set(truth: pl.DataFrame, halves: list[Half]) -> None:
    for half in halves:
        rows = truth.filter(pl.col("half") == half.name)
        sizes = rows.group_by("group").len()["len"].to_numpy()
        print(
            f"{half.name} half: {rows['group'].n_unique()} photos, {len(rows)} images "
            f"({len(half.names)} embedded), "
            f"groups of 1/2/3/4 images: {'/'.join(str(int((sizes == s).sum())) for s in (1, 2, 3, 4))}, "
            f"{half.true_pairs} true pairs"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-quality"))
    parser.add_argument(
        "--halves", default=",".join(HALVES), help="which halves to run, e.g. 'tune' while choosing defaults"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-path", default=None)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "int8", "fp32"),
        help="shipped model to test (auto = int8 on CPU)",
    )
    parser.add_argument(
        "--vs-fastdup",
        action="store_true",
        help="also run fastdup 2.54 on each half at its defaults and score it the same way",
    )
    parser.add_argument(
        "--compare-models",
        action="store_true",
        help="also int8 vs fp32 vs flip-invariant features on the report half",
    )
    parser.add_argument(
        "--k-cost",
        type=int,
        default=0,
        metavar="N",
        help="also time the reduce for each k on N random vectors",
    )
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"no photos at {args.photos}; pass --photos DIR", file=sys.stderr)
        return 2

    config = RunConfig("unused", "unused")
    truth = build_set(args.photos, args.out, args.seed)
    halves = [
        run_half(name, truth, args.out, args.model_path, args.precision) for name in args.halves.split(",")
    ]
    print_set(truth, halves)
    for half in halves:
        print_separation(half)
    tune = next((h for h in halves if h.name == "tune"), None)
    if tune is not None:
        choose_defaults(tune)
    for half in halves:
        print_thresholds(half, config.nearest_neighbors_k)
    print(
        f"\nruns at the package defaults (threshold {config.threshold}, k {config.nearest_neighbors_k}, "
        f"ccthreshold {config.ccthreshold}): "
        "half | images | true pairs | similarity.csv pairs | precision | recall | component purity | "
        "same-component precision | recall | matches the recomputation"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for half in halves:
        print_run(half, config)
    for half in halves:
        print_edits(half)
    if args.vs_fastdup:
        python = fastdup_python(args.out)
        theirs = [fastdup_half(half, truth, args.out, python) for half in halves]
        for half in theirs:
            print_separation(half)
        used = json.loads((theirs[0].work / "config.json").read_text())
        print(
            f"\nfastdup 2.54 at its defaults (threshold {used['threshold']}, "
            f"k {used['nearest_neighbors_k']}, its default ccthreshold): half | images | true pairs | "
            "similarity.csv pairs | precision | recall | component purity | same-component precision | recall"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for half in theirs:
            print_fastdup_run(half)
    if args.compare_models:
        report = next(h for h in halves if h.name == "report")
        compare_models(report, config.nearest_neighbors_k)
    if args.k_cost:
        print_k_cost(args.k_cost)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
