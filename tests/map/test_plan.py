"""The map plan's fused form: WORK pieces for workers that run every stage, and the stages
run through one after another in one process."""

from __future__ import annotations

import json

import numpy as np

from fastdup_ray.map.plan import (
    ACTOR,
    DecodeSettings,
    EmbedSettings,
    Fused,
    MapPlan,
    MapSettings,
    run_through,
)
from fastdup_ray.map.sources import ReadSettings, WorkUnit


def plan_of(*units: WorkUnit) -> MapPlan:
    settings = MapSettings(ReadSettings(), DecodeSettings(32), EmbedSettings("model.onnx", 8), batch_size=2)
    return MapPlan(settings, units)


def test_loose_files_are_cut_into_pieces_and_an_archive_stays_whole():
    files = WorkUnit("images-0.", "files", tuple(f"/d/{i}.jpg" for i in range(5)))
    archive = WorkUnit("t.tar", "archive", ("/d/t.tar",))
    rows = plan_of(files, archive).work_pieces(2)
    cuts = [(r["unit"], json.loads(r["locations"]), r["first_seq"], r["closes"]) for r in rows]
    assert cuts == [
        ("images-0.", ["/d/0.jpg", "/d/1.jpg"], 0, False),
        ("images-0.", ["/d/2.jpg", "/d/3.jpg"], 2, False),
        ("images-0.", ["/d/4.jpg"], 4, True),
        ("t.tar", ["/d/t.tar"], 0, True),
    ]


def test_a_unit_of_no_files_is_still_one_closing_piece():
    rows = plan_of(WorkUnit("empty.", "files", ())).work_pieces(2)
    assert [(r["unit"], r["first_seq"], r["closes"]) for r in rows] == [("empty.", 0, True)]


def test_the_fused_stage_is_every_stage_of_the_plan_in_order():
    plan = plan_of(WorkUnit("a.", "files", ("/d/a.jpg",)))
    fused = plan.fused(2)
    assert isinstance(fused, Fused) and fused.placement == ACTOR
    assert fused.stages == plan.stages(2)


def test_run_through_feeds_each_stage_what_the_one_before_yields():
    def split(batch):
        yield {"x": batch["x"][:1]}
        yield {"x": batch["x"][1:]}

    def double(batch):
        yield {"x": batch["x"] * 2}

    out = list(run_through((split, double), {"x": np.array([1, 2])}))
    assert [b["x"].tolist() for b in out] == [[2], [4]]
