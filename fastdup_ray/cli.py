"""Command line: ``fastdup-ray run INPUT --work-dir OUT [fastdup parameters]`` and ``fastdup-ray demo``."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import tempfile
from pathlib import Path

from fastdup_ray.config import RunConfig, cli_help
from fastdup_ray.errors import ConfigError, FastdupRayError, InputError
from fastdup_ray.params import PARAMS


def _add_run_options(parser: argparse.ArgumentParser, inputs: bool = True) -> None:
    """One option per parameter of the table that has a flag (``inputs``: input_dir and
    --work-dir too). They carry no defaults here: RunConfig holds them, and an option
    given on the command line overrides the same key of --config."""
    parser.add_argument(
        "--config", help="YAML file of run parameters (RunConfig names); options given here override it"
    )
    for param in PARAMS:
        if not param.flags or (param.name in ("input_dir", "work_dir") and not inputs):
            continue
        if not param.flags[0].startswith("-"):  # positional: optional, --config may give it
            parser.add_argument(param.name, nargs="?", help=cli_help(param))
            continue
        options: dict = {"dest": param.name, "help": cli_help(param)}
        if param.kind == "bool":  # a switch: absent means "not given", not False
            options.update(action="store_true", default=argparse.SUPPRESS)
        else:
            options.update(type={"int": int, "float": float}.get(param.kind), choices=param.choices or None)
        parser.add_argument(*param.flags, **options)


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
    _add_run_options(run)
    demo = commands.add_parser(
        "demo", help="make a small sample with known duplicates and a broken file, and run on it"
    )
    demo.add_argument(
        "out_dir", nargs="?", default=None, help="folder for sample/ and work/ (default: a new temp folder)"
    )
    _add_run_options(demo, inputs=False)
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
        help=(
            "folder inputs: move the images of remove.csv into DIR, keeping their paths below the "
            "input folder"
        ),
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
    "create_galleries": (
        "every gallery below and index.html: the run's summary, parameters and a link to each"
    ),
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
                help=(
                    "statistic to sort by: blur, dark, bright, mean, min, max, std, width, height, "
                    "file_size, unique_colors, ... (default %(default)s)"
                ),
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
            f"outputs in {work}\nnext, look at what it found:\n"
            f"  fastdup-ray create-galleries {work} {galleries}\n  then open file://{galleries}/index.html"
        )
    return 0 if summary.good else 1
