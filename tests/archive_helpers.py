"""Zips of real photos and hostile zips, built inside the tests (never stored in the repo)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

# Real photos (relative to ../shared/data) per brand, small JPEGs.
BRAND_PHOTOS = {
    "ferrari": ["cars/vidhyagupta_car_brands_5/ferrari/train_3.jpg",
                "cars/vidhyagupta_car_brands_5/ferrari/test_79.jpg"],
    "mercedes": ["cars/vidhyagupta_car_brands_5/mercedes/train_6.jpg",
                 "cars/vidhyagupta_car_brands_5/mercedes/test_65.jpg"],
    "audi": ["cars/mfismail_car_brands_3/audi/test_27.jpg", "cars/vidhyagupta_car_brands_5/bmw/test_66.jpg"],
}


def folder_zip(shared_data: Path, out: Path, top: str = "", layout=None, extra: dict | None = None) -> Path:
    """A zip of a folder-per-class tree of real photos, under ``top/`` when given; ``extra``: name -> bytes."""
    layout = layout or BRAND_PHOTOS
    prefix = f"{top}/" if top else ""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for brand, photos in layout.items():
            for relative in photos:
                archive.write(shared_data / relative, f"{prefix}{brand}/{Path(relative).name}")
        for name, data in (extra or {}).items():
            archive.writestr(f"{prefix}{name}", data)
    return out


def snapshot(folder: Path) -> dict:
    """Every path under ``folder`` (hidden ones too) with its bytes, to prove nothing was left behind."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def zip_bytes(entries: dict, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip in memory from ``{name or ZipInfo: bytes}``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def set_encrypted_flag(data: bytes) -> bytes:
    """Mark every entry as encrypted (bit 0 of the flags) in its local and central headers."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (at := patched.find(signature, start)) != -1:
            patched[at + offset] |= 0x01
            start = at + 4
    return bytes(patched)


def shrink_declared_size(data: bytes, new_size: int) -> bytes:
    """Make every header claim an unpacked size of ``new_size`` bytes (a header that lies)."""
    patched = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (at := patched.find(signature, start)) != -1:
            patched[at + offset: at + offset + 4] = new_size.to_bytes(4, "little")
            start = at + 4
    return bytes(patched)
