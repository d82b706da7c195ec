"""Command line: ``fastdup-ray run INPUT --work-dir OUT [fastdup parameters]`` and ``fastdup-ray demo``."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from pathlib import Path

from fastdup_ray.config import (
    DEFAULT_CCTHRESHOLD,
    DEFAULT_D,
    DEFAULT_K,
    DEFAULT_THRESHOLD,
    RunConfig,
)
from fastdup_ray.errors import ConfigError, FastdupRayError, InputError


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Run options carry no defaults here: RunConfig holds them, and an option given on the
    command line overrides the same key of --config."""
    parser.add_argument(
        "--config", help="YAML file of run parameters (RunConfig names); options given here override it"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help=f"similarity.csv keeps pairs at or above this cosine similarity (default {DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--lower-threshold",
        dest="lower_threshold",
        type=float,
        help="fraction of kNN edges, least similar first, written to outliers.csv (default 0.05)",
    )
    parser.add_argument(
        "-k",
        "--nearest-neighbors-k",
        dest="nearest_neighbors_k",
        type=int,
        help=f"neighbours per image (default {DEFAULT_K})",
    )
    parser.add_argument(
        "--turi-param",
        dest="turi_param",
        help=f"fastdup's comma list, e.g. 'ccthreshold=0.9,delete_tar=0' (default ccthreshold={DEFAULT_CCTHRESHOLD})",
    )
    parser.add_argument(
        "--num-images",
        dest="num_images",
        type=int,
        help="only the first N images of the sorted listing (0 = all)",
    )
    parser.add_argument("--d", type=int, help=f"feature width of the model (default {DEFAULT_D})")
    parser.add_argument(
        "--model-path",
        dest="model_path",
        help="your own ONNX model instead of the shipped EfficientNet-Lite0",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "int8", "fp32", "fp16"),
        help="shipped model, all at 176 px: int8 (CPU default, ~2.3x the fp32 speed), fp16 (GPU default) or fp32",
    )
    parser.add_argument(
        "--compute", choices=("cpu", "gpu"), help="where to embed (gpu falls back to cpu when none is found)"
    )
    parser.add_argument("--batch-size", dest="batch_size", type=int, help="images per batch (default 64)")
    parser.add_argument(
        "--num-threads",
        dest="num_threads",
        type=int,
        help="embedding actors (threads with --executor local); 0 = one per CPU",
    )
    parser.add_argument(
        "--executor",
        choices=("auto", "local", "ray"),
        help="local: worker processes on this machine; ray: Ray Data and Ray tasks; auto: ray when a cluster is given, inputs are remote or compute is gpu",
    )
    parser.add_argument(
        "--nn-provider",
        dest="nn_provider",
        choices=("nnf", "turi"),
        help="index family, fastdup's names (default nnf)",
    )
    parser.add_argument(
        "--nnf-mode",
        dest="nnf_mode",
        help="faiss factory string for nn_provider=nnf: Flat (exact, default), HNSW32, IVF4096,Flat, IVF16384,PQ64, ...",
    )
    parser.add_argument(
        "--nprobe",
        type=int,
        help="nnf_mode IVF<n>,Flat: lists each image is compared with, exactly (default 2)",
    )
    parser.add_argument(
        "--nnmodel", choices=("brute_force", "ball_tree", "lsh"), help="index for nn_provider=turi"
    )
    parser.add_argument(
        "--reduce-memory-gb",
        dest="reduce_memory_gb",
        type=float,
        help="above this many GiB of vectors the reduce runs distributed, as tasks of the engine (default 8)",
    )
    parser.add_argument(
        "--reduce-strategy",
        dest="reduce_strategy",
        choices=("auto", "memory", "distributed"),
        help="memory: every vector in one process; distributed: tasks writing Parquet parts; auto (default): distributed above --reduce-memory-gb",
    )
    parser.add_argument(
        "--rows-per-partition",
        dest="rows_per_partition",
        type=int,
        help="rows per task of the distributed reduce (default 250000)",
    )
    parser.add_argument(
        "--csv-row-limit",
        dest="csv_row_limit",
        type=int,
        help="the distributed reduce writes a table's CSV too while it has at most this many rows (default 50000000)",
    )
    parser.add_argument(
        "--run-mode",
        dest="run_mode",
        type=int,
        choices=(0, 1, 2, 3, 4),
        help="0 extract + neighbours (default), 1 extract features only, 2 neighbours from the shards in work-dir, 3 score test-dir images against work-dir's index, 4 the same with test-dir features",
    )
    parser.add_argument(
        "--test-dir",
        dest="test_dir",
        help="run_mode 3: images, run_mode 4: extracted features, to score against work-dir's index",
    )
    parser.add_argument(
        "--min-offset",
        dest="min_offset",
        type=int,
        help="first input (archive or image) of the sorted listing to process",
    )
    parser.add_argument(
        "--max-offset", dest="max_offset", type=int, help="process inputs before this offset (exclusive)"
    )
    parser.add_argument(
        "--shard-size", dest="shard_size", type=int, help="loose images per features shard (default 1000)"
    )
    parser.add_argument(
        "--video-fps", dest="video_fps", type=float, help="frames taken per second of video (default 1)"
    )
    parser.add_argument(
        "--thumbnail-size",
        dest="thumbnail_size",
        type=int,
        help="longest side of the thumbnails kept for the galleries (default 256; 0 = none)",
    )
    parser.add_argument(
        "--cache-dir",
        dest="cache_dir",
        help="where delete_tar=0 / delete_img=0 keep archives and images (default: system temp dir)",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        dest="s3_endpoint_url",
        help="S3-compatible endpoint (default: AWS_ENDPOINT_URL or AWS)",
    )
    parser.add_argument("--s3-region", dest="s3_region", help="S3 region (default: AWS_REGION / AWS config)")
    parser.add_argument(
        "--s3-profile",
        dest="s3_profile",
        help="profile of ~/.aws/credentials; keys themselves only via AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=argparse.SUPPRESS,
        help="clear an earlier run in --work-dir first (needed to reuse a work dir for another input)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging and Ray Data progress bars",
    )


def load_config_file(path: str) -> dict:
    """Run parameters from a YAML file: a mapping of RunConfig names ('-' or '_')."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of parameter: value")
    return {str(key).replace("-", "_"): value for key, value in values.items()}


def config_from_args(args: dict) -> RunConfig:
    """--config file first, then every option given on the command line over it."""
    values = load_config_file(args.pop("config")) if args.get("config") else {}
    values.update({key: value for key, value in args.items() if value is not None})
    missing = [name for name in ("input_dir", "work_dir") if not values.get(name)]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} must be given, as an argument or in --config")
    return RunConfig.from_kwargs(values.pop("input_dir"), values.pop("work_dir"), **values)


class Parser(argparse.ArgumentParser):
    """argparse, naming the nearest known option when one is mistyped."""

    def error(self, message: str):
        unknown = re.search(r"unrecognized arguments: (-\S+)", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1).split("=")[0], known_options(self), n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
        super().error(message)


def known_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of the parser and of its commands."""
    options = []
    for action in parser._actions:
        options += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                options += known_options(command)
    return sorted(set(options))


def build_parser() -> argparse.ArgumentParser:
    from fastdup_ray import __version__

    parser = Parser(
        prog="fastdup-ray",
        description="Find duplicates, near-duplicates, outliers and clusters in image datasets, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"fastdup-ray {__version__}")
    names = [
        "run",
        "demo",
        "evaluate",
        "dedup",
        *(n.replace("_", "-") for n in GALLERIES),
        "export-to-tensorboard-projector",
    ]
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{" + ",".join(names) + "}", parser_class=Parser
    )
    run = commands.add_parser(
        "run", help="run the whole job over a folder, archive(s), bucket prefix, file list or video"
    )
    run.add_argument(
        "input_dir",
        nargs="?",
        help="folder (recursive), s3://bucket/prefix, minio://host/bucket/prefix, s3://b/{00000..00099}.tar, "
        "tar/tgz/zip, .parquet of image bytes, video, or a .txt/.csv file list",
    )
    run.add_argument("--work-dir", dest="work_dir", help="where the outputs go")
    _add_run_options(run)
    demo = commands.add_parser(
        "demo", help="make a small sample with known duplicates and a broken file, and run on it"
    )
    demo.add_argument(
        "out_dir", nargs="?", default=None, help="folder for sample/ and work/ (default: a new temp folder)"
    )
    _add_run_options(demo)
    evaluate = commands.add_parser(
        "evaluate", help="precision, recall, F1, average precision and component purity against ground truth"
    )
    evaluate.add_argument("work_dir", help="work dir of a finished run")
    evaluate.add_argument(
        "--groups",
        required=True,
        help="CSV with filename,group columns: images of one group are duplicates of each other",
    )
    dedup = commands.add_parser(
        "dedup", help="keep.csv and remove.csv: one image kept per component; move, link or delete the others"
    )
    dedup.add_argument("work_dir", help="work dir of a finished run")
    dedup.add_argument(
        "--keep",
        choices=("resolution", "file_size", "first"),
        default="resolution",
        help="which image of a component to keep (default %(default)s)",
    )
    outputs = dedup.add_mutually_exclusive_group()
    outputs.add_argument(
        "--webdataset-out",
        dest="webdataset_out",
        metavar="DIR",
        default=None,
        help="also write the run's tar shards here without the removed samples",
    )
    outputs.add_argument(
        "--move-to",
        dest="move_to",
        metavar="DIR",
        help="folder inputs: move the images of remove.csv into DIR, keeping their paths below the input folder",
    )
    outputs.add_argument(
        "--symlink-to",
        dest="symlink_to",
        metavar="DIR",
        help="folder inputs: link the images of remove.csv in DIR the same way; the inputs stay as they are",
    )
    outputs.add_argument(
        "--delete", action="store_true", help="folder inputs: delete the images of remove.csv"
    )
    dedup.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print what --move-to, --symlink-to or --delete would do, and change nothing",
    )
    _add_report_commands(commands)
    return parser


GALLERIES = {
    "create_galleries": "every gallery below and index.html: the run's summary, parameters and a link to each",
    "create_duplicates_gallery": "pairs of similarity.csv side by side, most similar first",
    "create_outliers_gallery": "outliers.csv: images far from everything, beside their nearest neighbour",
    "create_components_gallery": "components of two or more images, largest first",
    "create_stats_gallery": "images sorted by one statistic of stats.csv",
    "create_similarity_gallery": "each image followed by the images most similar to it",
}


def _add_report_commands(commands) -> None:
    """Galleries and the projector export under fastdup's function names (hyphens or underscores)."""
    for name, help_text in GALLERIES.items():
        gallery = commands.add_parser(name.replace("_", "-"), help=f"HTML gallery: {help_text}")
        gallery.set_defaults(command=name)
        gallery.add_argument("work_dir", help="work dir of a finished run")
        gallery.add_argument("save_path", help="folder for the HTML pages and their thumbnails")
        gallery.add_argument(
            "--num-images",
            dest="num_images",
            type=int,
            default=argparse.SUPPRESS,
            help="at most this many rows (default: all; stats: 100)",
        )
        gallery.add_argument(
            "--page-size",
            dest="page_size",
            type=int,
            default=argparse.SUPPRESS,
            help="rows per HTML page (default 50)",
        )
        gallery.add_argument(
            "--thumbnail-size",
            dest="thumbnail_size",
            type=int,
            default=argparse.SUPPRESS,
            help="longest side of the images shown, in CSS pixels (default 256)",
        )
        if name in ("create_galleries", "create_duplicates_gallery", "create_components_gallery"):
            gallery.add_argument(
                "--keep",
                choices=("resolution", "file_size", "first"),
                default=argparse.SUPPRESS,
                help="mark the image dedup --keep would keep (default resolution)",
            )
        if name in ("create_components_gallery", "create_similarity_gallery"):
            gallery.add_argument(
                "--max-items",
                dest="max_items",
                type=int,
                default=argparse.SUPPRESS,
                help="images shown per row",
            )
        if name == "create_stats_gallery":
            gallery.add_argument(
                "--metric",
                default="blur",
                help="statistic to sort by: blur, dark, bright, mean, min, max, std, width, height, file_size, unique_colors, ... (default %(default)s)",
            )
            gallery.add_argument(
                "--descending",
                dest="ascending",
                action="store_false",
                default=argparse.SUPPRESS,
                help="highest values first (default: lowest first; bright: highest first)",
            )
    projector = commands.add_parser(
        "export-to-tensorboard-projector",
        help="write a sample of the features, names and thumbnails for TensorBoard's projector",
    )
    projector.set_defaults(command="export_to_tensorboard_projector")
    projector.add_argument("work_dir", help="work dir of a finished run")
    projector.add_argument("log_dir", help="TensorBoard log dir to write")
    projector.add_argument(
        "--sample-size",
        dest="sample_size",
        type=int,
        default=900,
        help="images in the sample (default %(default)s)",
    )


# Errors of the report, dedup and evaluate commands that the user can act on.
USER_ERRORS = (FastdupRayError, OSError, ValueError)


def report_error(exc: Exception) -> int:
    """Print ``exc`` as one line on stderr, without a traceback; the exit status is 2."""
    message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(f"fastdup-ray: error: {message}", file=sys.stderr)
    return 2


def require_folder(work_dir: str) -> str:
    """``work_dir`` when it is a folder (or remote): a missing one is most likely a typo."""
    from fastdup_ray.rundir.storage import is_remote

    if not is_remote(work_dir) and not Path(work_dir).is_dir():
        raise InputError(f"no finished run in {work_dir}: no such folder")
    return work_dir


def run_report(command: str, args: dict) -> int:
    from fastdup_ray import reports

    try:
        written = getattr(reports, command)(**args)
    except USER_ERRORS as exc:
        return report_error(exc)
    print(f"wrote {written}")
    return 0


def folder_action(args: dict) -> tuple[str | None, str | None]:
    """(action, target folder) of dedup's --move-to / --symlink-to / --delete, or (None, None)."""
    if args["move_to"]:
        return "move", args["move_to"]
    if args["symlink_to"]:
        return "symlink", args["symlink_to"]
    return ("delete", None) if args["delete"] else (None, None)


def run_dedup(args: dict) -> int:
    from fastdup_ray.actions.dedup import (
        write_deduplicated_webdataset,
        write_keep_remove,
    )
    from fastdup_ray.actions.folder import apply_plan, plan_actions

    action, target = folder_action(args)
    if args["dry_run"] and action is None:
        return report_error(ConfigError("--dry-run goes with --move-to, --symlink-to or --delete"))
    try:
        keep_csv, remove_csv = write_keep_remove(require_folder(args["work_dir"]), args["keep"])
        plan = plan_actions(args["work_dir"], action, target, args["keep"]) if action else None
        if plan and not args["dry_run"]:
            actions_log = apply_plan(args["work_dir"], plan)
        shards = (
            write_deduplicated_webdataset(args["work_dir"], args["webdataset_out"], args["keep"])
            if args["webdataset_out"]
            else []
        )
    except USER_ERRORS as exc:
        return report_error(exc)
    print(f"wrote {keep_csv} and {remove_csv}")
    if plan and args["dry_run"]:
        for step in plan.actions:
            print(
                {
                    "move": f"would move {step.source} -> {step.target}",
                    "symlink": f"would link {step.target} -> {step.source}",
                    "delete": f"would delete {step.source}",
                }[step.action]
            )
    if plan:
        print(
            plan.summary(dry_run=args["dry_run"])
            + (f"; log: {actions_log}" if plan.actions and not args["dry_run"] else "")
        )
    if shards:
        print(f"wrote {len(shards)} deduplicated webdataset shards to {args['webdataset_out']}")
    problems = getattr(shards, "problems", [])
    for problem in problems:
        print(f"fastdup-ray: not copied whole: {problem}", file=sys.stderr)
    # Some input could not be copied whole: the output is partial, and the exit status says so.
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and "_" in argv[0]:
        argv[0] = argv[0].replace("_", "-")  # fastdup's function names work as commands too, unlisted
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command in GALLERIES or command == "export_to_tensorboard_projector":
        return run_report(command, args)
    if command == "dedup":
        return run_dedup(args)
    if command == "evaluate":
        from fastdup_ray.actions.evaluate import evaluate_run

        try:
            scores = evaluate_run(args["work_dir"], args["groups"])
        except USER_ERRORS as exc:
            return report_error(exc)
        for name, value in scores.items():
            print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")
        return 0
    try:
        if command == "demo":
            from fastdup_ray.sample import make_sample_dataset

            out_dir = Path(args.pop("out_dir") or tempfile.mkdtemp(prefix="fastdup-ray-demo-"))
            sample = make_sample_dataset(out_dir / "sample")
            print(
                f"sample: {len(sample.images)} images and {len(sample.corrupt)} broken file in {sample.root}"
            )
            args["input_dir"], args["work_dir"] = str(sample.root), str(out_dir / "work")
        from fastdup_ray.pipeline import run_config

        summary = run_config(config_from_args(args))  # logs its own summary
    except FastdupRayError as exc:
        print(f"fastdup-ray: error: {exc}", file=sys.stderr)
        return 2
    if command == "demo":
        work, galleries = (out_dir / "work").resolve(), (out_dir / "galleries").resolve()
        print(
            f"outputs in {work}\nnext, look at what it found:\n  fastdup-ray create-galleries {work} {galleries}\n  then open file://{galleries}/index.html"
        )
    return 0 if summary.good else 1
