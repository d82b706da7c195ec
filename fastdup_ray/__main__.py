"""``python -m fastdup_ray ...``: the form ``ray job submit -- python -m fastdup_ray run ...`` uses."""

from fastdup_ray.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
