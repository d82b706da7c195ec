"""fastdup.datasets (FastdupHFDataset, ...) is not in fastdup_ray: using any name of this
module raises the one line that says what to do instead."""

from fastdup_ray.out_of_reach import refuse


def __getattr__(name: str):
    if name.startswith("__"):  # the import system's own look-ups (__path__, __spec__, ...)
        raise AttributeError(name)
    refuse("fastdup_ray.datasets")
