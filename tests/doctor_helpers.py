"""Helpers for the data doctor tests: a real car dataset with one injected case of every problem."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageEnhance

SOURCE = "cars/manzhura_ru_5models"


def edited_copy(src: Path, dest: Path, crop: float = 0.05, scale: float = 0.6, brightness: float = 1.15,
                quality: int = 70) -> Path:
    """A near-duplicate as users make them: cropped a little, resized, brighter, recompressed as JPEG."""
    image = Image.open(src).convert("RGB")
    width, height = image.size
    box = (int(width * crop), int(height * crop * 0.5), int(width * (1 - crop * 0.7)), int(height * (1 - crop)))
    image = image.crop(box)
    image = image.resize((max(32, int(image.width * scale)), max(32, int(image.height * scale))),
                         Image.Resampling.LANCZOS)
    ImageEnhance.Brightness(image).enhance(brightness).save(dest, "JPEG", quality=quality)
    return dest


@dataclass
class Injected:
    """A dataset under ``train`` with known problems, and a ``test`` folder some of it leaks from."""

    train: Path
    test: Path
    duplicate: tuple[str, str] = ("", "")  # (copy, original), relative to train
    near_duplicate: tuple[str, str] = ("", "")
    leak_exact: tuple[str, str] = ("", "")  # (train photo, test photo relative to test)
    leak_edited: tuple[str, str] = ("", "")
    not_a_car: list[str] = field(default_factory=list)
    flipped: tuple[str, str] = ("", "")  # (path, true class)
    tiny: str = ""
    strip: str = ""
    truncated: str = ""
    empty: str = ""


def make_injected_dataset(shared_data: Path, root: Path) -> Injected:
    """Manzhura's 5 car models (real photos) with one injected case of every kind of finding."""
    train, test = root / "train", root / "test"
    for folder in sorted((shared_data / SOURCE).iterdir()):
        if folder.is_dir():
            shutil.copytree(folder, train / folder.name)
    test.mkdir(parents=True)
    data = Injected(train, test)
    bmw = sorted((train / "bmw_x5").iterdir())
    shutil.move(bmw[0], test / bmw[0].name)  # a test photo, copied back into train as-is
    shutil.copy(test / bmw[0].name, train / "bmw_x5" / "leak_exact.jpg")
    data.leak_exact = ("bmw_x5/leak_exact.jpg", bmw[0].name)
    shutil.move(bmw[1], test / bmw[1].name)  # another, copied back edited
    edited_copy(test / bmw[1].name, train / "bmw_x5" / "leak_edited.jpg", crop=0.04, scale=0.7, brightness=0.9)
    data.leak_edited = ("bmw_x5/leak_edited.jpg", bmw[1].name)

    cruiser = sorted((train / "land_cruiser").iterdir())[0]
    shutil.copy(cruiser, train / "land_cruiser" / "zz_copy.jpg")
    data.duplicate = ("land_cruiser/zz_copy.jpg", f"land_cruiser/{cruiser.name}")
    qashqai = sorted((train / "qashqai").iterdir())
    edited_copy(qashqai[0], train / "qashqai" / "zz_edited.jpg")
    data.near_duplicate = ("qashqai/zz_edited.jpg", f"qashqai/{qashqai[0].name}")

    for name in ("caffe_cat.jpg", "imagenet_acoustic_guitar.JPEG"):
        shutil.copy(shared_data / "noncars" / name, train / "solyaris" / name)
        data.not_a_car.append(f"solyaris/{name}")
    shutil.move(qashqai[-1], train / "bmw_x5" / "flip.jpeg")
    data.flipped = ("bmw_x5/flip.jpeg", "qashqai")

    reference = sorted((shared_data / "cars/alloxxa_whatacar_reference").rglob("*.jpg"))
    Image.open(reference[0]).convert("RGB").resize((48, 36)).save(train / "vaz_2110" / "tiny.jpg")
    data.tiny = "vaz_2110/tiny.jpg"
    picture = Image.open(reference[1]).convert("RGB")
    picture.crop((0, 0, picture.width, picture.width // 4)).save(train / "vaz_2110" / "strip.jpg")
    data.strip = "vaz_2110/strip.jpg"
    whole = sorted((train / "vaz_2110").glob("v*"))[0].read_bytes()
    (train / "vaz_2110" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    data.truncated = "vaz_2110/truncated.jpg"
    (train / "vaz_2110" / "empty.jpg").write_bytes(b"")
    data.empty = "vaz_2110/empty.jpg"
    return data
