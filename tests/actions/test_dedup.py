import polars as pl
import pytest

from fastdup_ray.actions.dedup import choose_keepers

NAMES = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
COMPONENTS = pl.DataFrame({"__id": [0, 1, 2, 3, 4], "component_id": [0, 0, 2, 0, 4]})
STATS = pl.DataFrame(
    {
        "__id": [0, 1, 2, 3, 4],
        "width": [100, 400, 50, 400, 10],
        "height": [100, 300, 50, 300, 10],
        "file_size": [9000, 100, 5, 200, 1],
    }
)


@pytest.mark.parametrize(
    "rule, kept_in_group", [("resolution", "b.jpg"), ("file_size", "a.jpg"), ("first", "a.jpg")]
)
def test_one_kept_per_component_by_rule(rule, kept_in_group):
    keep, remove = choose_keepers(COMPONENTS, NAMES, STATS, rule)
    assert sorted(keep["filename"].to_list()) == sorted([kept_in_group, "c.jpg", "e.jpg"])
    assert (
        sorted(keep["filename"].to_list() + remove["filename"].to_list()) == NAMES
    )  # each image exactly once
    assert set(remove["component_id"].to_list()) == {0}


def test_size_rules_need_stats():
    with pytest.raises(ValueError, match="stats.csv"):
        choose_keepers(COMPONENTS, NAMES, None, "resolution")
