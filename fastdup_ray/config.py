"""RunConfig: fastdup's run parameters, parsed once and carried through every stage.

Its fields, defaults and checks come from the parameter table, ``fastdup_ray.params.PARAMS``;
so do the CLI's run options and README's parameter table (``update_readme`` rewrites it).
Values come from keyword arguments of :func:`fastdup_ray.run`, the CLI or a --config file;
the comma list ``turi_param`` ('ccthreshold=0.88,delete_tar=0') is unpacked into fields.
Every invalid value raises :class:`ConfigError` naming the parameter.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from fastdup_ray.errors import ConfigError
from fastdup_ray.params import (
    ALIASES,
    BY_NAME,
    DEFAULT_CCTHRESHOLD,
    DEFAULT_D,
    DEFAULT_K,
    DEFAULT_THRESHOLD,
    FINGERPRINTED,
    PARAMS,
    REQUIRED,
    TURI_PARAM_KEYS,
    Param,
)

# The defaults stay importable from here, where callers found them before the table.
__all__ = [
    "DEFAULT_CCTHRESHOLD",
    "DEFAULT_D",
    "DEFAULT_K",
    "DEFAULT_THRESHOLD",
    "RunConfig",
    "check",
    "cli_help",
    "parameter_table_markdown",
    "parse_turi_param",
    "update_readme",
]

# Where README's generated table starts and ends; the start says how to regenerate it.
REGENERATE = "python -c 'from fastdup_ray.config import update_readme; update_readme(\"README.md\")'"
README_BEGIN = (
    f"<!-- parameter table: generated from fastdup_ray/params.py; edit it there and run {REGENERATE} -->"
)
README_END = "<!-- end of the parameter table -->"


def _table_fields(cls: type) -> type:
    """Give ``cls`` one dataclass field per entry of PARAMS, in table order (the required
    ones, input_dir and work_dir, first, so RunConfig(input_dir, work_dir) still works)."""
    cls.__annotations__ = {p.name: p.annotation for p in PARAMS}
    for p in PARAMS:
        if not p.required:
            setattr(cls, p.name, field(default=p.default, repr=p.recorded))
    return cls


@dataclass
@_table_fields
class RunConfig:
    """Every parameter of a run: one field per entry of fastdup_ray.params.PARAMS, named as
    fastdup names it."""

    def __post_init__(self) -> None:
        for p in PARAMS:  # pathlib paths are welcome, but config.json and shard names want str
            value = getattr(self, p.name)
            if p.kind == "path" and isinstance(value, os.PathLike):
                setattr(self, p.name, os.fspath(value))
            elif p.kind == "inputs" and isinstance(value, (list, tuple)):
                setattr(self, p.name, [os.fspath(x) if isinstance(x, os.PathLike) else x for x in value])
            elif p.kind == "inputs" and isinstance(value, os.PathLike):
                setattr(self, p.name, os.fspath(value))
            elif p.kind == "bool" and type(value) is int and value in (0, 1):
                setattr(self, p.name, bool(value))  # fastdup's scripts write verbose=1, delete_img=0
        if self.turi_param:
            for key, value in parse_turi_param(self.turi_param).items():
                setattr(self, key, value)
        self.validate()

    @classmethod
    def from_kwargs(cls, input_dir: str, work_dir: str, **kwargs: Any) -> "RunConfig":
        """Build a config from fastdup-style keyword arguments (aliases such as ``k`` allowed)."""
        from fastdup_ray.out_of_reach import check_run_arguments

        check_run_arguments(kwargs)  # fastdup's detectors and downloaded models, before "unknown"
        known = {p.name for p in PARAMS}
        resolved: dict[str, Any] = {}
        for name, value in kwargs.items():
            target = ALIASES.get(name, name)
            if target not in known or target in ("input_dir", "work_dir"):
                raise ConfigError(f"unknown parameter {name!r}; known parameters: {', '.join(sorted(known))}")
            if target in resolved:
                raise ConfigError(f"parameter {target!r} given twice (once as {name!r})")
            resolved[target] = value
        return cls(input_dir=input_dir, work_dir=work_dir, **resolved)

    def validate(self) -> None:
        for p in PARAMS:
            check(p, getattr(self, p.name))
        # Rules between parameters, which no single entry of the table can state.
        if self.max_offset is not None and self.max_offset <= self.min_offset:
            raise ConfigError(
                f"max_offset must be an integer >= {self.min_offset + 1}, got {self.max_offset!r}"
            )
        from fastdup_ray.reduce.index import factory_string

        factory_string(self.nn_provider, self.nnf_mode, self.nnmodel)  # names the bad parameter
        if self.run_mode in (3, 4) and not self.test_dir:
            raise ConfigError(
                f"run_mode={self.run_mode} needs test_dir: the images (3) or features (4) to score "
                "against work_dir's index"
            )
        if self.model_path is not None and not os.path.isfile(self.model_path):
            raise ConfigError(f"model_path {self.model_path!r} is not a file")
        if not self.work_dir:
            raise ConfigError("work_dir must be given")

    def to_json(self) -> str:
        """The resolved parameters, without secrets (keys never reach a file or a log) and
        without turi_param, which is already unpacked into its fields."""
        values = dataclasses.asdict(self)
        for p in PARAMS:
            if not p.recorded:
                values.pop(p.name)
        values.update(self.model_record())  # derived: what resume compares
        return json.dumps(values, indent=2, sort_keys=True)

    def storage_options(self):
        from fastdup_ray.rundir.storage import StorageOptions

        return StorageOptions(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            profile=self.s3_profile,
            key=self.s3_key,
            secret=self.s3_secret,
        )

    def extraction_settings(self) -> dict[str, Any]:
        """Settings that change what a features shard holds: a resume must not mix them."""
        return {**self.model_record(), **{name: getattr(self, name) for name in FINGERPRINTED}}

    def model_record(self) -> dict[str, str]:
        """The model as config.json records it: the file that model_path, precision and
        compute decide, by name and by a digest of its bytes (another model saved under the
        same name must not resume the run)."""
        from fastdup_ray.map.embed import model_digest

        path = self.model_file()
        return {"model_file": os.path.basename(path), "model_sha256": model_digest(path)}

    def model_file(self) -> str:
        """The ONNX file to embed with: the user's, or the shipped model at ``precision``
        ('auto': int8 on CPU, where its model step is ~2.3x faster; fp16 on GPU)."""
        from fastdup_ray.map.embed import model_file_for

        return model_file_for(self.model_path, self.precision, self.compute)


def parse_turi_param(text: str) -> dict[str, Any]:
    """Parse fastdup's ``turi_param`` comma list, e.g. ``'ccthreshold=0.88,delete_tar=0'``."""
    parsed: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not raw:
            raise ConfigError(f"turi_param item {item!r} must look like key=value")
        if key not in TURI_PARAM_KEYS:
            raise ConfigError(f"turi_param key {key!r} is unknown; known keys: {', '.join(TURI_PARAM_KEYS)}")
        if BY_NAME[key].kind == "float":
            try:
                parsed[key] = float(raw)
            except ValueError:
                raise ConfigError(f"turi_param {key} must be a number, got {raw!r}") from None
        else:  # a bool, written as fastdup writes it
            if raw not in ("0", "1"):
                raise ConfigError(f"turi_param {key} must be 0 or 1, got {raw!r}")
            parsed[key] = raw == "1"
    return parsed


def check(param: Param, value: Any) -> None:
    """Raise ConfigError naming ``param`` when ``value`` is not of its kind, choices or range."""
    if value is None and param.optional:
        return
    kind = param.kind
    if kind == "bool":
        ok, wanted = isinstance(value, bool), "True or False"
    elif kind == "int":
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind == "float":
        ok, wanted = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif kind == "inputs":
        ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))
        wanted = "a location or a list of locations"
    else:
        ok, wanted = isinstance(value, str), "a path" if kind == "path" else "a string"
    if param.choices:
        if not ok or value not in param.choices:
            raise ConfigError(f"{param.name} must be one of {param.choices}, got {value!r}")
        return
    if param.low is not None:
        if ok:
            below = value <= param.low if param.low_open else value < param.low
            ok = not below and (param.high is None or value <= param.high)
        if param.high is not None:
            wanted += f" between {param.low} and {param.high}"
        else:
            wanted += f" {'>' if param.low_open else '>='} {param.low}"
    if not ok:
        raise ConfigError(
            f"{param.name} must be {wanted}{' (or None)' if param.optional else ''}, got {value!r}"
        )


def shown_default(param: Param) -> str:
    """The default as README's table writes it (markdown)."""
    value = param.default
    if param.shown_default:
        return param.shown_default
    if value is REQUIRED:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"`{value!r}`" if value == "" else f"`{value}`"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    return f"{value:.2f}" if isinstance(value, float) and param.high == 1 else str(value)


def cli_help(param: Param) -> str:
    """The option's --help line: its help and, where that says something, its default."""
    text, value = param.help, param.default
    if param.shown_default or not (value is REQUIRED or value is None or value is False or value == ""):
        text += f" (default {shown_default(param).replace('`', '')})"
    return text.replace("%", "%%")  # argparse formats help with %


def parameter_table_markdown() -> str:
    """README.md's parameter table, one row per parameter, from PARAMS."""
    rows = ["| parameter | CLI | default | meaning here |", "|---|---|---|---|"]
    for p in PARAMS:
        name = f"`{p.name}`" + "".join(f" (alias `{alias}`)" for alias in p.aliases)
        if p.flags and not p.flags[0].startswith("-"):
            cli = "first argument"
        elif p.flags:
            cli = ", ".join(f"`{flag}`" for flag in p.flags)
        else:
            cli = "in `--turi-param`" if p.turi else "—"
        meaning = p.doc or p.help
        if p.fingerprint:
            meaning += "; a resume must keep it ([the resume rule](#the-resume-rule))"
        meaning = meaning.replace("|", "\\|")  # a | inside a cell would end it
        rows.append(f"| {name} | {cli} | {shown_default(p)} | {meaning} |")
    return "\n".join(rows) + "\n"


def update_readme(path: str) -> bool:
    """Write the generated table between README's markers; True when the file changed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    # The start marker is found by its first words, so a reworded one is replaced too.
    begin, end = text.find(README_BEGIN.split(":")[0]), text.find(README_END)
    if not 0 <= begin < end:
        raise ValueError(f"{path} has no parameter table markers ({README_BEGIN} ... {README_END})")
    new = text[:begin] + README_BEGIN + "\n" + parameter_table_markdown() + text[end:]
    if new != text:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(new)
    return new != text
