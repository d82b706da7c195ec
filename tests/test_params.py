"""The parameter table is the one source: RunConfig's fields, its checks, the run command's
options and README's parameter table all follow fastdup_ray.params.PARAMS."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path

import pytest

from fastdup_ray.cli import build_parser, config_from_args
from fastdup_ray.config import (
    README_BEGIN,
    README_END,
    REGENERATE,
    RunConfig,
    check,
    parameter_table_markdown,
    update_readme,
)
from fastdup_ray.errors import ConfigError
from fastdup_ray.params import ALIASES, BY_NAME, KINDS, PARAMS, STAGES

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_parameter_rows(text: str) -> list[str]:
    """The table rows of README's '## Parameters' section, found without the markers so a
    README from before them is compared too."""
    section = text.partition("\n## Parameters\n")[2].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("|")]


def test_readme_parameter_table_is_the_generated_one():
    rows = readme_parameter_rows(README.read_text(encoding="utf-8"))
    generated = parameter_table_markdown().splitlines()
    diff = "\n".join(difflib.unified_diff(rows, generated, "README.md", "generated", lineterm="", n=0))
    assert rows == generated, (
        "README.md's parameter table is not the one fastdup_ray/params.py declares; "
        f"run {REGENERATE}:\n{diff}"
    )


def test_readme_marks_where_the_generated_table_goes():
    text = README.read_text(encoding="utf-8")
    assert text.count(README_BEGIN) == 1 and text.count(README_END) == 1
    assert text.index(README_BEGIN) < text.index(README_END)


def test_update_readme_rewrites_only_the_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nprose\n{README_BEGIN}\n| stale | row |\n{README_END}\nmore prose\n")
    assert update_readme(str(readme)) is True
    text = readme.read_text()
    assert "| stale | row |" not in text and parameter_table_markdown() in text
    assert text.startswith("# title\n\nprose\n") and text.endswith(f"{README_END}\nmore prose\n")
    assert update_readme(str(readme)) is False  # already up to date: the file is left alone


def test_runconfig_fields_are_the_table():
    fields = dataclasses.fields(RunConfig)
    assert [f.name for f in fields] == [p.name for p in PARAMS]
    for f in fields:
        param = BY_NAME[f.name]
        assert f.default == (dataclasses.MISSING if param.required else param.default), f.name
        assert f.repr == param.recorded, f.name


def test_the_table_keeps_its_own_rules():
    assert len(BY_NAME) == len(PARAMS)
    flags = [flag for p in PARAMS for flag in p.flags]
    assert len(flags) == len(set(flags)), "two parameters share a CLI flag"
    assert not set(ALIASES) & set(BY_NAME), "an alias shadows a parameter"
    for p in PARAMS:
        assert p.kind in KINDS and p.stage in STAGES and p.help, p.name
        if not p.required:
            check(p, p.default)  # every default passes its own check
        assert not p.turi or p.kind in ("float", "bool"), f"{p.name}: turi_param reads numbers and 0/1"
    assert [name for name in RunConfig("in", "out").extraction_settings()] == [
        "model_file",
        "model_sha256",
        *(p.name for p in PARAMS if p.fingerprint),
    ]


@pytest.mark.parametrize("param", [p for p in PARAMS if not p.required], ids=lambda p: p.name)
def test_a_value_of_the_wrong_kind_is_an_error_naming_the_parameter(param):
    with pytest.raises(ConfigError, match=rf"^{param.name} must be"):
        check(param, object())


def test_nnmodel_choices_are_the_indexes_it_builds():
    from fastdup_ray.reduce.index import TURI_MODELS

    assert set(BY_NAME["nnmodel"].choices) == set(TURI_MODELS)


def _command(name: str):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices[name]


def test_every_parameter_with_a_flag_is_a_run_option_and_in_its_help():
    run = _command("run")
    actions = {a.dest: a for a in run._actions}
    text = run.format_help()
    for p in PARAMS:
        if not p.flags:
            assert p.name not in actions, p.name
            continue
        positional = not p.flags[0].startswith("-")
        assert actions[p.name].option_strings == ([] if positional else list(p.flags)), p.name
        assert all(flag in text for flag in p.flags), p.name
    demo = {a.dest for a in _command("demo")._actions}
    assert "input_dir" not in demo and "work_dir" not in demo and "threshold" in demo


def test_options_not_given_leave_the_config_file_alone(tmp_path):
    # No run option may put a default into the parsed arguments: it would override --config.
    job = tmp_path / "job.yaml"
    job.write_text("input_dir: /in\nwork_dir: /out\noverwrite: true\nverbose: true\nthreshold: 0.8\nk: 5\n")
    args = vars(build_parser().parse_args(["run", "--config", str(job)]))
    args.pop("command")
    assert {key for key, value in args.items() if value is not None} == {"config"}
    config = config_from_args(args)
    assert (config.overwrite, config.verbose, config.threshold, config.nearest_neighbors_k) == (
        True,
        True,
        0.8,
        5,
    )
