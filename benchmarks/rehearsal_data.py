"""The rehearsal's data: LAION-style webdataset tars of distinct JPEGs with planted copies.

Each sample is ``<key>.jpg`` + ``.txt`` + ``.json`` (key = its global number, 9 digits, as
img2dataset names them). About 1 % of the samples are byte-identical copies and 2 % are
near copies (brighter, or cut by 2 %: near_copy) of a sample in another tar; a few
images are truncated JPEGs, and one more tar is empty. The ground truth goes to
``truth.json`` beside the tars, and a second call with the same sizes reuses them.

Pictures are either 2x2 mosaics of crops of the 300 dev photos (four different photos,
random crop boxes; unrelated mosaics stayed below 0.84 among 20,000, those that come near
share two or three of their photos) or, where the photos are not at hand (CI), drawn
collages: a background and two to five rotated, masked patches cut from a pool of
fastdup_ray.sample's procedural scenes, channels shuffled, some inverted. fastdup_ray.sample's
scenes alone are not thousands of distinct pictures (two of one material score up to 0.998);
among 3,000 collages one unrelated pair scored above 0.9 (0.913) and the 99th percentile of
each one's closest was 0.83, so a collage the shipped model scores at DRAWN_LIMIT or more
with an earlier one is drawn again: the ground truth's "unrelated" then holds by
construction for the model the run uses, and the run is still checked on everything else.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "imagenet-sample-dev"
TILE_W, TILE_H = 128, 96
SEED = 24_000_000
DRAWN_W, DRAWN_H = 256, 192
DRAWN_LIMIT = 0.85  # below the rehearsal's threshold (0.9), so no unrelated pair comes near it
POOL_SCENES = 240


@dataclass
class Truth:
    """What a correct run must find: every image member, the planted copy pairs and the
    broken members, by their names relative to the tar folder ('00003.tar/000003017.jpg')."""

    tars: int
    per_tar: int
    images: list[str] = field(default_factory=list)
    exact_pairs: list[list[str]] = field(default_factory=list)
    near_pairs: list[list[str]] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    empty_tar: str = ""
    tar_names: list[str] = field(default_factory=list)
    pictures: str = "mosaics"


_PHOTOS: dict = {}


def _photo(folder: Path, index: int):
    from PIL import Image

    if not _PHOTOS:
        _PHOTOS["paths"] = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")
        )
    if index not in _PHOTOS:
        image = Image.open(_PHOTOS["paths"][index]).convert("RGB")
        image.thumbnail((320, 320))
        _PHOTOS[index] = image
    return _PHOTOS[index]


def photo_count(folder: Path) -> int:
    return len([p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png")])


def mosaic(folder: Path, seed: int):
    """A 256x192 picture of four crops of four different photos, all chosen by ``seed``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = Image.new("RGB", (2 * TILE_W, 2 * TILE_H))
    for quarter, index in enumerate(rng.choice(photo_count(folder), 4, replace=False)):
        photo = _photo(folder, int(index))
        width, height = photo.size
        scale = rng.uniform(0.4, 0.8)
        crop_w, crop_h = int(width * scale), int(height * scale)
        x, y = int(rng.uniform(0, width - crop_w)), int(rng.uniform(0, height - crop_h))
        tile = photo.crop((x, y, x + crop_w, y + crop_h)).resize((TILE_W, TILE_H))
        out.paste(tile, ((quarter % 2) * TILE_W, (quarter // 2) * TILE_H))
    return out


_POOL: list = []


def _texture(rng: np.random.Generator, width: int, height: int):
    """A random cut of a random pool scene, resized, channels shuffled, sometimes inverted."""
    from PIL import Image

    from fastdup_ray.sample import MATERIALS, make_scene

    if not _POOL:
        _POOL.extend(make_scene(SEED + i, material=i % MATERIALS) for i in range(POOL_SCENES))
    scene = _POOL[int(rng.integers(len(_POOL)))]
    scale = rng.uniform(0.3, 1.0)
    cut_w, cut_h = int(scene.width * scale), int(scene.height * scale)
    x, y = int(rng.uniform(0, scene.width - cut_w)), int(rng.uniform(0, scene.height - cut_h))
    pixels = np.asarray(scene.crop((x, y, x + cut_w, y + cut_h)).resize((width, height)))
    pixels = pixels[..., rng.permutation(3)]
    return Image.fromarray(np.ascontiguousarray(255 - pixels if rng.random() < 0.3 else pixels))


def collage(seed: int):
    """A 256x192 drawn picture: a textured background, 2-5 rotated patches of other
    textures masked to an ellipse, polygon or rectangle, and a few lines."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = _texture(rng, DRAWN_W, DRAWN_H)
    for _ in range(int(rng.integers(2, 6))):
        width, height = int(rng.uniform(0.2, 0.7) * DRAWN_W), int(rng.uniform(0.2, 0.7) * DRAWN_H)
        patch = _texture(rng, width, height).rotate(rng.uniform(0, 360), expand=True)
        mask = Image.new("L", patch.size, 0)
        pen, (w, h) = ImageDraw.Draw(mask), patch.size
        shape = int(rng.integers(3))
        if shape == 0:
            pen.ellipse((0, 0, w, h), fill=255)
        elif shape == 1:
            pen.polygon(
                [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(int(rng.integers(3, 7)))], fill=255
            )
        else:
            pen.rectangle((w * 0.15, h * 0.15, w * 0.85, h * 0.85), fill=255)
        where = (int(rng.uniform(-w / 3, DRAWN_W - w / 2)), int(rng.uniform(-h / 3, DRAWN_H - h / 2)))
        out.paste(patch, where, mask)
    pen = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(0, 4))):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        points = [(rng.uniform(0, DRAWN_W), rng.uniform(0, DRAWN_H)) for _ in range(3)]
        pen.line(points, fill=colour, width=int(rng.integers(1, 8)))
    return out


def _collage_jpegs(seeds: list[int]) -> list[bytes]:
    from fastdup_ray.sample import jpeg_bytes

    return [jpeg_bytes(collage(seed)) for seed in seeds]


def distinct_collages(count: int, seed: int = SEED, workers: int = 2) -> list[bytes]:
    """The JPEGs of ``count`` collages the shipped model scores below DRAWN_LIMIT with one
    another: candidates are drawn in batches ('workers' processes), and one too close to
    an accepted picture (or an earlier one of its batch) is skipped."""
    from fastdup_ray.map.decode import decode_image
    from fastdup_ray.map.embed import Embedder, default_model_path

    embedder = Embedder(default_model_path("int8"), threads=workers)
    accepted: list[bytes] = []
    vectors: list[np.ndarray] = []
    candidate, batch = seed, 512
    with ProcessPoolExecutor(workers) as pool:
        while len(accepted) < count:
            seeds = list(range(candidate, candidate + batch))
            candidate += batch
            chunks = [seeds[i::workers] for i in range(workers)]
            jpegs = dict(zip(sum(chunks, []), sum(pool.map(_collage_jpegs, chunks), [])))
            pixels = np.stack([decode_image(jpegs[s], embedder.image_size) for s in seeds])
            fresh = embedder.embed(pixels)
            closest = (fresh @ np.vstack(vectors).T).max(axis=1) if vectors else np.full(batch, -1.0)
            kept: list[int] = []
            for i, s in enumerate(seeds):
                near_kept = kept and float((fresh[kept] @ fresh[i]).max()) >= DRAWN_LIMIT
                if len(accepted) < count and closest[i] < DRAWN_LIMIT and not near_kept:
                    kept.append(i)
                    accepted.append(jpegs[s])
            vectors.append(fresh[kept])
    return accepted


def plan(tars: int, per_tar: int, seed: int = SEED) -> tuple[Truth, dict[int, tuple[str, int]]]:
    """The ground truth and, for each planted sample (global number), what it is:
    ('exact', original) / ('near', original) / ('broken', 0). Originals are in another tar
    and have one copy at most."""
    rng = np.random.default_rng(seed)
    total = tars * per_tar
    n_exact, n_near = max(2, total // 100), max(4, total // 50)
    n_broken = max(2, total // 30_000)
    chosen = rng.choice(total, 2 * (n_exact + n_near) + n_broken, replace=False)
    copies, originals = chosen[: n_exact + n_near], chosen[n_exact + n_near : 2 * (n_exact + n_near)]
    roles: dict[int, tuple[str, int]] = {}
    taken = {int(n) for n in chosen}
    for i, (copy, original) in enumerate(zip(copies.tolist(), originals.tolist())):
        if copy // per_tar == original // per_tar:  # same tar: take the original from the next one
            original = (original + per_tar) % total
            if original in taken:
                continue  # one copy fewer
            taken.add(original)
        roles[copy] = ("exact" if i < n_exact else "near", original)
    for broken in chosen[-n_broken:]:
        roles[int(broken)] = ("broken", 0)
    truth = Truth(tars=tars, per_tar=per_tar, tar_names=[f"{t:05d}.tar" for t in range(tars + 1)])
    truth.empty_tar = truth.tar_names[-1]
    for number in range(total):
        name = member_name(number, per_tar)
        truth.images.append(name)
        role, original = roles.get(number, ("", 0))
        if role == "broken":
            truth.broken.append(name)
        elif role:
            getattr(truth, f"{role}_pairs").append([member_name(original, per_tar), name])
    return truth, roles


def near_copy(image, kind: int):
    """A brighter copy (fastdup_ray.sample's edit) or one cut by 2 % at each side: on these
    mosaics both score at least 0.92 with their original (240 of each tried), well above
    the unrelated pairs; a shrunk or flipped mosaic fell to 0.86."""
    from fastdup_ray.sample import near_duplicate

    if kind == 0:
        return near_duplicate(image, 2)
    width, height = image.size
    return image.crop((width // 50, height // 50, width - width // 50, height - height // 50))


def member_name(number: int, per_tar: int) -> str:
    return f"{number // per_tar:05d}.tar/{number:09d}.jpg"


def own_jpeg(pictures: Path | list[bytes], number: int, seed: int) -> bytes:
    """Sample ``number``'s own picture: a mosaic of the photos in ``pictures`` (a folder) or
    its collage (``pictures`` is the list of distinct collages' JPEGs)."""
    from fastdup_ray.sample import jpeg_bytes

    return pictures[number] if isinstance(pictures, list) else jpeg_bytes(mosaic(pictures, seed + number))


def image_bytes(
    pictures: Path | list[bytes], number: int, roles: dict[int, tuple[str, int]], seed: int
) -> bytes:
    """The JPEG of sample ``number``: its own picture, or a copy of its original's."""
    from PIL import Image

    from fastdup_ray.sample import jpeg_bytes

    role, original = roles.get(number, ("", 0))
    if role == "exact":
        return own_jpeg(pictures, original, seed)
    if role == "near":
        image = Image.open(io.BytesIO(own_jpeg(pictures, original, seed))).convert("RGB")
        return jpeg_bytes(near_copy(image, original % 2), quality=85)
    data = own_jpeg(pictures, number, seed)
    return data[: len(data) // 3] if role == "broken" else data


def _write_tar(job: tuple) -> str:
    pictures, out, tar, per_tar, roles, seed = job
    path = Path(out) / f"{tar:05d}.tar"
    temp = path.with_suffix(".tmp")
    with tarfile.open(temp, "w") as archive:
        for number in range(tar * per_tar, (tar + 1) * per_tar):
            key = f"{number:09d}"
            caption = f"sample {number} of the rehearsal"
            members = {
                f"{key}.jpg": image_bytes(pictures, number, roles, seed),
                f"{key}.txt": caption.encode(),
                f"{key}.json": json.dumps({"key": key, "caption": caption}).encode(),
            }
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 1_700_000_000
                archive.addfile(info, io.BytesIO(data))
    temp.rename(path)
    return path.name


def make_dataset(
    out: Path,
    tars: int,
    per_tar: int,
    photos: Path | None = DEFAULT_PHOTOS,
    workers: int = 2,
    written: Callable[[str], None] | None = None,
) -> Truth:
    """Write the tars (and the empty one) into ``out`` with 'workers' processes, unless a
    complete set of these sizes is there already; returns the ground truth. Mosaics of
    ``photos``, or drawn collages when ``photos`` is None. ``written`` is called with each
    tar's name once it is complete (in order; made or reused)."""
    out.mkdir(parents=True, exist_ok=True)
    truth, roles = plan(tars, per_tar)
    truth.pictures = "mosaics" if photos is not None else "collages"
    done = written or (lambda name: None)
    truth_file = out / "truth.json"
    if truth_file.exists() and json.loads(truth_file.read_text()) == asdict(truth):
        if all((out / name).exists() for name in truth.tar_names):
            for name in truth.tar_names:
                done(name)
            return truth
    for stale in out.glob("*.tar"):
        stale.unlink()
    if photos is not None:
        jobs = [(photos.resolve(), str(out), t, per_tar, roles, SEED) for t in range(tars)]
        with ProcessPoolExecutor(workers) as pool:
            for name in pool.map(_write_tar, jobs):
                done(name)
    else:  # the collages are drawn already: writing them is only copying
        collages = distinct_collages(tars * per_tar, workers=workers)
        for t in range(tars):
            done(_write_tar((collages, str(out), t, per_tar, roles, SEED)))
    with tarfile.open(out / truth.empty_tar, "w"):
        pass
    done(truth.empty_tar)
    truth_file.write_text(json.dumps(asdict(truth)))
    return truth
