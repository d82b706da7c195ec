"""results.py is the one reader of a finished run: its config.json, names and bad list."""

import ast
from pathlib import Path

import numpy as np
import pytest

import fastdup_ray
from fastdup_ray.errors import InputError
from fastdup_ray.rundir import results
from fastdup_ray.rundir.shards import FeatureShardWriter, save_binary_feature

PACKAGE = Path(fastdup_ray.__file__).parent
READER = PACKAGE / "rundir" / "results.py"
# Calls that read or parse a file's contents.
READS = {"loads", "load", "read_bytes", "read_if_present", "read_text", "open", "from_json"}


def _names_config(node: ast.AST) -> bool:
    """Whether an expression names the run's config.json (layout.CONFIG_FILE or the literal)."""
    for part in ast.walk(node):
        named = part.id if isinstance(part, ast.Name) else getattr(part, "attr", None)
        if named == "CONFIG_FILE" or (isinstance(part, ast.Constant) and part.value == "config.json"):
            return True
    return False


def _config_reads(source: Path) -> list[str]:
    """'file:line' of every call in ``source`` that reads or parses config.json."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in READS and any(_names_config(arg) for arg in node.args):
            found.append(f"{source.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_config_json_is_read_in_results_py_only():
    reads = [where for source in sorted(PACKAGE.rglob("*.py")) for where in _config_reads(source)]
    assert [where for where in reads if not where.startswith("rundir/results.py:")] == []
    assert _config_reads(READER), "results.read_config should read config.json"
    assert not hasattr(fastdup_ray.RunConfig, "from_json")  # a second parser of the file


def test_read_config_returns_the_record(tmp_path):
    (tmp_path / "config.json").write_text('{"input_dir": "/data", "threshold": 0.9}')
    assert results.read_config(str(tmp_path)) == {"input_dir": "/data", "threshold": 0.9}
    assert results.has_config(str(tmp_path))


def test_read_config_missing_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"no run in .*: config.json is missing"):
        results.read_config(str(tmp_path))
    assert results.read_config(str(tmp_path), missing_ok=True) is None


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"input_dir": "/da', "cannot read .*config.json"),
        ("[1, 2]", "holds a JSON list"),
        (b"\xff\xfe", "cannot read"),
    ],
)
def test_read_config_corrupt_is_one_clear_error(tmp_path, text, reason):
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InputError, match=reason):
        results.read_config(str(tmp_path))
    with pytest.raises(InputError, match=reason):  # missing_ok forgives a missing file only
        results.read_config(str(tmp_path), missing_ok=True)


def test_read_names_of_shards_and_of_bare_features(tmp_path):
    for prefix, names in (("a.", ["x", "y"]), ("b.", ["z"])):
        with FeatureShardWriter(tmp_path / "run", d=2, prefix=prefix) as writer:
            writer.add_good(names, np.ones((len(names), 2)))
    assert results.read_names(str(tmp_path / "run")) == ["x", "y", "z"]
    save_binary_feature(tmp_path / "bare", ["p", "q"], np.ones((2, 3)))
    (tmp_path / "bare" / "features.done").unlink()  # bare features: no shard marker
    assert results.read_names(str(tmp_path / "bare")) == ["p", "q"]
    with pytest.raises(InputError, match="no features shards"):
        results.read_names(str(tmp_path))


def test_read_bad_list_merged_per_shard_and_empty(tmp_path):
    assert results.read_bad_list(str(tmp_path)).rows() == []
    assert results.read_bad_list(str(tmp_path)).columns == ["filename", "error"]
    for prefix, bad in (("a.", "1.jpg"), ("b.", "2.jpg")):
        with FeatureShardWriter(tmp_path, d=2, prefix=prefix) as writer:
            writer.add_bad([bad], [f"corrupt image: {prefix}"])
    assert results.read_bad_list(str(tmp_path), ["a.", "b."])["filename"].to_list() == ["1.jpg", "2.jpg"]
    (tmp_path / "features.bad.csv").write_text("filename,error\n0012,1e5\n")
    assert results.read_bad_list(str(tmp_path)).rows() == [("0012", "1e5")]  # text as written
