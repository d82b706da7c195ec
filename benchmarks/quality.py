"""Near-duplicate quality benchmark on real photos.

Builds a labelled set from a folder of photos: every original, plus for about half of
them 1-3 transformed copies (JPEG recompression, downscaling, crops, flips,
brightness/contrast, greyscale, blur, small rotation, borders, text overlays, aspect
changes, hue shifts, and pairs of these). Runs fastdup_ray over it, then prints

- average precision, best F1 and recall at precision >= 0.95 over all image pairs
  (every pair scored from features.dat: the model's separating power), with the
  threshold that reaches precision 0.95: what the default threshold is calibrated on;
- precision / recall of similarity.csv at the default threshold (what users get);
- precision / recall of "same component" pairs at the default ccthreshold.

    python benchmarks/quality.py [--photos ../shared/data/imagenet-sample-dev] [--out /tmp/fdr-quality]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
from photoset import DEFAULT_PHOTOS, build_set

import fastdup_ray
from fastdup_ray.config import DEFAULT_CCTHRESHOLD, DEFAULT_THRESHOLD
from fastdup_ray.evaluate import pair_metrics, precision_recall_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/fastdup-ray-quality"))
    parser.add_argument("--k", type=int, default=5, help="neighbours per image for the run (groups have up to 4 images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-path", default=None)
    parser.add_argument("--precision", default="auto", choices=("auto", "int8", "fp32"), help="shipped model to test (auto = int8 on CPU)")
    parser.add_argument("--d", type=int, default=1280)
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"no photos at {args.photos}; pass --photos DIR", file=sys.stderr)
        return 2

    truth = build_set(args.photos, args.out, args.seed)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)  # a fresh run, not a resume of the last one
    summary = fastdup_ray.run(str(args.out / "images"), str(work), k=args.k, model_path=args.model_path, d=args.d, precision=args.precision)
    names, features = fastdup_ray.load_binary_features(work)
    group_of = dict(zip(truth["filename"], truth["group"]))
    groups = np.array([group_of[n] for n in names])
    transform_of = dict(zip(truth["filename"], truth["transform"]))

    # Every pair scored: the model's own separating power, independent of k.
    sims = features @ features.T
    upper = np.triu_indices(len(names), k=1)
    scores = sims[upper]
    same = groups[upper[0]] == groups[upper[1]]
    metrics = pair_metrics(scores, same, precision_floor=0.95)
    p_def, r_def = precision_recall_at(scores, same, DEFAULT_THRESHOLD)

    # What users get: similarity.csv at the default threshold, components at ccthreshold.
    similarity = pl.read_csv(work / "similarity.csv")
    sim_same = np.array([group_of[a] == group_of[b] for a, b in zip(similarity["from"], similarity["to"])], dtype=bool)
    total_pos = int(same.sum())
    csv_precision = float(sim_same.mean()) if len(sim_same) else 1.0
    csv_recall = float(sim_same.sum()) / total_pos
    comps = pl.read_csv(work / "connected_components.csv")["component_id"].to_numpy()
    comp_pairs = comps[upper[0]] == comps[upper[1]]
    comp_precision = float((comp_pairs & same).sum() / max(1, comp_pairs.sum()))
    comp_recall = float((comp_pairs & same).sum() / total_pos)

    print(f"set: {len(names)} images ({summary.bad} bad), {truth['group'].n_unique()} groups, {total_pos} true duplicate pairs, {len(scores)} pairs scored")
    print(f"all pairs: average precision {metrics.average_precision:.4f}, best F1 {metrics.best_f1:.4f} at {metrics.best_f1_threshold:.3f}, "
          f"recall {metrics.recall_at_precision:.4f} at precision >= 0.95 (threshold {metrics.threshold_at_precision:.3f})")
    print(f"all pairs at default threshold {DEFAULT_THRESHOLD}: precision {p_def:.4f}, recall {r_def:.4f}")
    print(f"similarity.csv (k={args.k}, threshold {DEFAULT_THRESHOLD}): {len(similarity)} pairs, precision {csv_precision:.4f}, recall {csv_recall:.4f}")
    print(f"components (ccthreshold {DEFAULT_CCTHRESHOLD}): same-component pairs precision {comp_precision:.4f}, recall {comp_recall:.4f}")
    # Which edits the model finds hardest: the lowest score of each copy to its original.
    index = {n: i for i, n in enumerate(names)}
    per_transform: dict[str, list[float]] = {}
    for name in names:
        if transform_of[name] == "original":
            continue
        orig = [n for n in names if group_of[n] == group_of[name] and transform_of[n] == "original"][0]
        per_transform.setdefault(transform_of[name].split("+")[0] if "+" not in transform_of[name] else "pair", []).append(float(sims[index[name], index[orig]]))
    print("copy-to-original similarity by edit (min / median):")
    for name, values in sorted(per_transform.items(), key=lambda kv: np.median(kv[1])):
        print(f"  {name:20s} n={len(values):3d} min {min(values):.3f} median {np.median(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
