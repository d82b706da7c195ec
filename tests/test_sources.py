import os

import pytest

from fastdup_ray.errors import InputError
from fastdup_ray.sources import list_inputs


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_recursive_any_case_extensions_sorted(tmp_path):
    for name in ["b.JPG", "a.png", "sub/c.Jpeg", "sub/deep/d.tif", "e.TIFF", "f.gif", "g.bmp", "h.webp", "notes.txt", "sub/x.csv"]:
        touch(tmp_path / name)
    listing = list_inputs(str(tmp_path))
    names = [os.path.relpath(p, tmp_path) for p in listing.locations]
    assert names == sorted(names)
    assert set(names) == {"b.JPG", "a.png", "sub/c.Jpeg", "sub/deep/d.tif", "e.TIFF", "f.gif", "g.bmp", "h.webp"}
    assert all(os.path.isabs(p) for p in listing.locations)


def test_num_images_takes_the_first_of_the_sorted_listing(tmp_path):
    for i in range(5):
        touch(tmp_path / f"{i}.jpg")
    assert [os.path.basename(p) for p in list_inputs(str(tmp_path), num_images=2).locations] == ["0.jpg", "1.jpg"]


def test_missing_and_empty_inputs_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    touch(tmp_path / "readme.txt")
    with pytest.raises(InputError, match="no images found"):
        list_inputs(str(tmp_path))


def test_non_utf8_name_goes_to_the_bad_list(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    touch(tmp_path / "ok.jpg")
    listing = list_inputs(str(tmp_path))
    assert [os.path.basename(p) for p in listing.locations] == ["ok.jpg"]
    assert len(listing.bad) == 1 and "UTF-8" in listing.bad[0][1] and "\\xe9" in listing.bad[0][0]
