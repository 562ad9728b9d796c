"""One-file bundles: a model bundle folder packed as a single ``.zip`` to download, upload or fetch by URL.

The zip holds the bundle's files (names owned by ``carclf.bundle``) and a ``carclf-bundle.json`` manifest
with a format version and each file's SHA-256. Unpacking applies ``carclf.archive``'s rules, checks the
manifest, the checksums and that nothing else is inside, loads the model in Keras safe mode from a hidden
temporary folder, and only then renames it into ``models_dir``: a refused or broken file leaves nothing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Optional, Union

from carclf.archive import ArchiveLimits, ArchiveSource, member_parts, open_zip, safe_members, unpack_to_temp
from carclf.atomic import atomic_output, read_json_object
from carclf.bundle import (
    BUNDLE_DIR_MODE,
    LABELS_FILE,
    META_FILE,
    MODEL_FILE,
    TEMP_PREFIX,
    check_bundle_name,
    list_bundles,
    load_bundle,
    read_bundle_meta,
    safe_bundle_name,
)
from carclf.errors import ArchiveError, BundleError

# The manifest inside every bundle file.
MANIFEST_FILE = "carclf-bundle.json"
# The manifest's "format" value: tells a bundle file from any other zip.
MANIFEST_KIND = "carclf-bundle"
# Version of the one-file layout this carclf writes and reads.
FILE_FORMAT_VERSION = 1
# The files of a bundle folder that go into the file (in this order).
BUNDLE_FILES = (MODEL_FILE, LABELS_FILE, META_FILE)
# Size limits for an uploaded or downloaded bundle file (a Lite2 bundle is ~25 MB; big backbones ~100 MB).
BUNDLE_LIMITS = ArchiveLimits(max_files=8, max_total_bytes=1024**3, max_ratio=200.0, max_member_bytes=1024**3)
# Written inside a bundle fetched by URL: where it came from, so a restart does not download it again.
SOURCE_MARKER = ".carclf-source.json"
# Environment variables read by ensure_model_from_env.
ENV_URL = "CARCLF_MODEL_URL"
ENV_SHA256 = "CARCLF_MODEL_SHA256"
# Bytes read per chunk while downloading; seconds before a stalled download fails.
DOWNLOAD_CHUNK = 1 << 16
DOWNLOAD_TIMEOUT_S = 60

ProgressCallback = Callable[[int, int], None]


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_mismatch(folder: Path, checksums: Mapping[str, str]) -> Optional[str]:
    """The first file of ``checksums`` ({name: SHA-256}) under ``folder`` whose bytes do not match, else None:
    how an unpacked bundle or run archive is checked against its manifest."""
    return next((name for name, expected in checksums.items() if sha256_file(folder / name) != expected), None)


def pack_bundle(model_dir: Union[str, Path], out_path: Union[str, Path]) -> Path:
    """Write bundle folder ``model_dir`` as one zip file at ``out_path`` (written atomically) and return it."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    read_bundle_meta(model_dir)  # refuse to pack a partial or foreign folder
    manifest = {"format": MANIFEST_KIND, "version": FILE_FORMAT_VERSION,
                "files": {name: sha256_file(model_dir / name) for name in BUNDLE_FILES}}
    with atomic_output(out_path) as temp:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
            for name in BUNDLE_FILES:
                archive.write(model_dir / name, name)
    return out_path


def unpack_bundle(
    source: ArchiveSource,
    models_dir: Union[str, Path],
    limits: Optional[ArchiveLimits] = None,
    quota=None,
) -> Path:
    """Check and install a bundle file into ``models_dir/<name>`` (name from meta, made unique); return it.

    Raises ``BundleError`` (bad manifest, version, checksum, extra or missing file, unloadable model),
    ``ArchiveError`` (unsafe or damaged zip) or ``QuotaError``; nothing is left behind on failure.
    """
    models_dir = Path(models_dir)
    limits = limits or BUNDLE_LIMITS
    with open_zip(source) as archive:
        infos = safe_members(archive, limits)
        manifest = _read_manifest(archive, infos)
    temp = unpack_to_temp(source, models_dir, limits, quota=quota)
    try:
        damaged = checksum_mismatch(temp.path, manifest["files"])
        if damaged:
            raise BundleError(f"{damaged} in the bundle file does not match its checksum: the file is damaged or "
                              "was modified; download or pack it again.")
        (temp.path / MANIFEST_FILE).unlink()
        bundle = load_bundle(temp.path)  # Keras safe mode; checks labels, outputs, input size
        del bundle
        name = _unique_bundle_name(models_dir, read_bundle_meta(temp.path).get("name"))
        os.chmod(temp.path, BUNDLE_DIR_MODE)
        target = models_dir / name
        os.rename(temp.path, target)
    finally:
        shutil.rmtree(temp.path, ignore_errors=True)
    return target


def fetch_bundle(
    url: str,
    models_dir: Union[str, Path],
    sha256: Optional[str] = None,
    progress: Optional[ProgressCallback] = None,
    limits: Optional[ArchiveLimits] = None,
) -> Path:
    """Download a bundle file (http/https) and install it with ``unpack_bundle``; return the bundle folder.

    ``sha256`` (hex) is checked against the downloaded bytes. ``progress(done_bytes, total_bytes or 0)``
    is called while downloading. Any failure raises ``BundleError`` and leaves no partial file or bundle.
    """
    models_dir = Path(models_dir)
    limits = limits or BUNDLE_LIMITS
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise BundleError(f"cannot fetch {url!r}: only http:// and https:// URLs are supported.")
    expected = sha256.strip().lower() if sha256 else None
    if expected is not None and (len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected)):
        raise BundleError(f"{sha256!r} is not a SHA-256 (64 hex digits): copy it again.")
    models_dir.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}download-", suffix=".zip", dir=models_dir)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _download(url, out, limits.max_total_bytes, progress)
        if expected is not None and digest != expected:
            raise BundleError(f"the file downloaded from {url} has SHA-256 {digest}, expected {expected}: "
                              "the URL or the checksum is wrong, or the download was damaged.")
        try:
            path = unpack_bundle(temp_name, models_dir, limits)
        except ArchiveError as error:
            raise BundleError(f"the file downloaded from {url} is not a usable bundle file: {error}") from None
        _write_source_marker(path, url, digest)
        return path
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)


def ensure_model_from_env(models_dir: Union[str, Path], env: Mapping[str, str] = os.environ,
                          progress: Optional[ProgressCallback] = None) -> Optional[Path]:
    """Fetch the bundle named by ``CARCLF_MODEL_URL`` once; return its folder (None when the variable is unset).

    With ``CARCLF_MODEL_SHA256`` set, a bundle fetched earlier with that checksum is reused; without it, one
    fetched earlier from the same URL is. A progress line goes to stderr while downloading.
    """
    url = (env.get(ENV_URL) or "").strip()
    if not url:
        return None
    expected = (env.get(ENV_SHA256) or "").strip().lower() or None
    for info in list_bundles(models_dir):
        marker = read_json_object(info.path / SOURCE_MARKER)
        if expected is not None and marker.get("sha256") == expected:
            return info.path
        if expected is None and marker.get("url") == url:
            return info.path
    return fetch_bundle(url, models_dir, sha256=expected, progress=progress or progress_line(f"downloading {url}"))


def progress_line(label: str, stream=None) -> ProgressCallback:
    """A ``progress(done, total)`` callback that rewrites one line on stderr ('label: 12.0 of 40.0 MB')."""
    stream = stream or sys.stderr

    def report(done: int, total: int) -> None:
        of = f" of {total / 1e6:.1f}" if total else ""
        end = "\n" if total and done >= total else ""
        print(f"\r{label}: {done / 1e6:.1f}{of} MB", end=end, file=stream, flush=True)

    return report


def _download(url: str, out, max_bytes: int, progress) -> str:
    """Stream ``url`` into ``out``; return the hex SHA-256; raise BundleError on any network problem."""
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else 0
            if total > max_bytes:
                raise BundleError(f"{url} is {total / 1e6:.1f} MB, more than the limit of {max_bytes / 1e6:.1f} MB.")
            while chunk := response.read(DOWNLOAD_CHUNK):
                received += len(chunk)
                if received > max_bytes:
                    raise BundleError(f"{url} is larger than the limit of {max_bytes / 1e6:.1f} MB.")
                digest.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(received, total)
    except urllib.error.HTTPError as error:
        raise BundleError(f"cannot download {url}: HTTP {error.code} {error.reason}: check the URL.") from None
    except urllib.error.URLError as error:
        raise BundleError(f"cannot download {url}: {error.reason}: check the URL and the network.") from None
    except (http.client.HTTPException, OSError, ValueError) as error:
        raise BundleError(f"the download of {url} broke off ({type(error).__name__}): try again.") from None
    if total and received != total:
        raise BundleError(f"the download of {url} broke off after {received} of {total} bytes: try again.")
    if received == 0:
        raise BundleError(f"{url} sent an empty file: check the URL.")
    return digest.hexdigest()


def _read_manifest(archive: zipfile.ZipFile, infos: list) -> dict:
    """The checked manifest; the archive must hold exactly the manifest and the files it lists, at its root."""
    names = []
    for info in infos:
        parts = member_parts(info)
        if info.is_dir() or len(parts) != 1:
            raise BundleError(f"{info.filename!r} does not belong in a bundle file: pack the bundle again "
                              "with 'python -m carclf bundle pack'.")
        names.append(parts[0])
    if MANIFEST_FILE not in names:
        raise BundleError(f"this zip has no {MANIFEST_FILE}: it is not a carclf bundle file; make one with "
                          "'python -m carclf bundle pack'.")
    try:
        manifest = json.loads(archive.read(MANIFEST_FILE).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as error:
        raise BundleError(f"{MANIFEST_FILE} is not valid JSON ({type(error).__name__}): "
                          "pack the bundle again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_KIND:
        raise BundleError(f"{MANIFEST_FILE} is not a carclf bundle manifest: pack the bundle again.")
    if manifest.get("version") != FILE_FORMAT_VERSION:
        raise BundleError(f"bundle file format version {manifest.get('version')!r} is not supported (this carclf "
                          f"reads version {FILE_FORMAT_VERSION}): pack it again with this carclf version.")
    files = manifest.get("files")
    if not isinstance(files, dict) or set(files) != set(BUNDLE_FILES) or not all(
            isinstance(value, str) for value in files.values()):
        raise BundleError(f"{MANIFEST_FILE} must list exactly {', '.join(BUNDLE_FILES)}: pack the bundle again.")
    missing = [name for name in BUNDLE_FILES if name not in names]
    if missing:
        raise BundleError(f"the bundle file lacks {', '.join(missing)}: pack the bundle again.")
    extra = sorted(set(names) - set(BUNDLE_FILES) - {MANIFEST_FILE})
    if extra or len(names) != len(set(names)):
        raise BundleError(f"the bundle file holds unexpected files ({', '.join(extra) or 'duplicates'}): "
                          "pack the bundle again.")
    return manifest


def _unique_bundle_name(models_dir: Path, name) -> str:
    base = check_bundle_name(safe_bundle_name(name or "model"))
    candidate, number = base, 2
    while (models_dir / candidate).exists():
        candidate = f"{base}-{number}"
        number += 1
    return candidate


def _write_source_marker(bundle_dir: Path, url: str, digest: str) -> None:
    (bundle_dir / SOURCE_MARKER).write_text(json.dumps({"url": url, "sha256": digest}) + "\n", encoding="utf-8")
