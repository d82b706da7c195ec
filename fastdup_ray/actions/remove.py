"""fastdup's ``remove_duplicates(input_dir, work_dir, distance, dry_run)``: run over a
local folder with components joined at ``distance`` (ccthreshold) and delete every
image of each component but the one ``dedup --keep`` keeps, through the checks of
``dedup --delete`` (actions/folder.py). With ``dry_run`` nothing is deleted and the line
says what would be."""

from __future__ import annotations

from typing import Any

from fastdup_ray.actions.folder import apply_plan, plan_actions


def remove_duplicates(
    input_dir: str,
    work_dir: str | None = None,
    distance: float = 0.96,
    dry_run: bool = False,
    keep: str = "resolution",
    **params: Any,
) -> int:
    """Returns 0 as fastdup does; prints one line: kept, deleted (or would be), bytes."""
    from fastdup_ray.pipeline import run

    work_dir = "work_dir" if work_dir is None else work_dir
    run(input_dir, work_dir, ccthreshold=distance, **params)
    plan = plan_actions(work_dir, "delete", keep=keep)
    if not dry_run:
        apply_plan(work_dir, plan)
    print(plan.summary(dry_run=dry_run))
    return 0
