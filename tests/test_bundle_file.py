"""One-file bundles: pack/unpack round trip, tampering, versions, fetch over real HTTP, and the CLI."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from archive_helpers import snapshot, symlink_info
from carclf.bundle import LABELS_FILE, META_FILE, MODEL_FILE, list_bundles, load_bundle
from carclf.bundle_file import (
    FILE_FORMAT_VERSION,
    MANIFEST_FILE,
    SOURCE_MARKER,
    ensure_model_from_env,
    fetch_bundle,
    pack_bundle,
    unpack_bundle,
)
from carclf.cli import main
from carclf.errors import ArchiveError, BundleError
from carclf.images import load_rgb_array
from inference_helpers import PHOTOS, SIZE, expected_colour, save_colour_bundle


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return save_colour_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def packed(bundle_dir, tmp_path_factory) -> Path:
    return pack_bundle(bundle_dir, tmp_path_factory.mktemp("files") / "colour.zip")


def _rewrite(source: Path, out: Path, change) -> Path:
    """Copy a bundle file, passing each (name, bytes) through ``change`` (None drops it; a list adds entries)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(out, "w") as target:
        for info in archive.infolist():
            for item in change(info.filename, archive.read(info)) or []:
                target.writestr(*item)
    return out


def test_round_trip_predicts_identically(bundle_dir: Path, packed: Path, shared_data: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(packed) as archive:
        assert sorted(archive.namelist()) == sorted([MANIFEST_FILE, MODEL_FILE, LABELS_FILE, META_FILE])
        manifest = json.loads(archive.read(MANIFEST_FILE))
    assert manifest["version"] == FILE_FORMAT_VERSION
    assert manifest["files"][MODEL_FILE] == hashlib.sha256((bundle_dir / MODEL_FILE).read_bytes()).hexdigest()
    models = tmp_path / "models"
    path = unpack_bundle(packed, models)
    assert path == models / "colour" and sorted(p.name for p in models.iterdir()) == ["colour"]
    for name in (MODEL_FILE, LABELS_FILE, META_FILE):
        assert (path / name).read_bytes() == (bundle_dir / name).read_bytes()
    photo = shared_data / PHOTOS["blue"][0]
    batch = load_rgb_array(photo, size=SIZE)[None].astype(np.float32)
    original, installed = load_bundle(bundle_dir), load_bundle(path)
    np.testing.assert_array_equal(installed.model.predict_on_batch(batch), original.model.predict_on_batch(batch))
    assert installed.class_names[int(np.argmax(installed.model.predict_on_batch(batch)))] == expected_colour(photo)
    again = unpack_bundle(packed, models)
    assert again.name == "colour-2"
    assert {info.name for info in list_bundles(models)} == {"colour", "colour-2"}


@pytest.mark.parametrize("case, error, message", [
    ("tampered", BundleError, "does not match its checksum"),
    ("version", BundleError, "format version 99 is not supported"),
    ("no-manifest", BundleError, "not a carclf bundle file"),
    ("extra-file", BundleError, "unexpected files"),
    ("missing-file", BundleError, "lacks labels.json"),
    ("in-folder", BundleError, "does not belong in a bundle file"),
    ("symlink", ArchiveError, "symbolic link"),
    ("truncated", ArchiveError, "not a readable zip"),
])
def test_bad_bundle_files_are_refused_and_leave_nothing(packed: Path, tmp_path: Path, case, error, message) -> None:
    def change(name: str, data: bytes):
        if case == "tampered" and name == LABELS_FILE:
            return [(name, data.replace(b"red", b"rod"))]
        if case == "version" and name == MANIFEST_FILE:
            return [(name, json.dumps({**json.loads(data), "version": 99}))]
        if case == "no-manifest" and name == MANIFEST_FILE:
            return None
        if case == "extra-file" and name == META_FILE:
            return [(name, data), ("evil.py", b"import os")]
        if case == "missing-file" and name == LABELS_FILE:
            return None
        if case == "in-folder":
            return [(f"colour/{name}", data)]
        if case == "symlink" and name == META_FILE:
            return [(name, data), (symlink_info("link"), b"/etc/passwd")]
        return [(name, data)]

    if case == "truncated":
        source = tmp_path / "bad.zip"
        source.write_bytes(packed.read_bytes()[: packed.stat().st_size * 2 // 3])
    else:
        source = _rewrite(packed, tmp_path / "bad.zip", change)
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(error, match=message):
        unpack_bundle(source, models)
    assert snapshot(models) == {}


class _Server:
    """A real HTTP server on 127.0.0.1 in a thread: serves ``files`` and a body cut short on /truncated."""

    def __init__(self, files: dict):
        self.files, self.requests = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                if self.path == "/truncated":
                    body = server.files["/colour.zip"]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if self.path not in server.files:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.files[self.path])))
                self.end_headers()
                self.wfile.write(server.files[self.path])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(packed: Path):
    serving = _Server({"/colour.zip": packed.read_bytes()})
    yield serving
    serving.close()


def test_fetch_good_download_with_progress_and_checksum(server, packed: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()
    calls = []
    path = fetch_bundle(f"{server.url}/colour.zip", tmp_path / "models", sha256=digest.upper(),
                        progress=lambda done, total: calls.append((done, total)))
    assert load_bundle(path).class_names == ["red", "green", "blue"]
    assert calls[-1] == (packed.stat().st_size, packed.stat().st_size)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["colour"]


@pytest.mark.parametrize("path, sha, message", [
    ("/colour.zip", "0" * 64, "expected 0000"),
    ("/missing.zip", None, "HTTP 404"),
    ("/truncated", None, "broke off"),
])
def test_fetch_failures_leave_nothing(server, tmp_path: Path, path: str, sha, message: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "keep.txt").write_text("untouched")
    before = snapshot(models)
    with pytest.raises(BundleError, match=message):
        fetch_bundle(f"{server.url}{path}", models, sha256=sha)
    assert snapshot(models) == before


def test_fetch_refuses_other_schemes(tmp_path: Path, packed: Path) -> None:
    with pytest.raises(BundleError, match="only http:// and https://"):
        fetch_bundle(packed.as_uri(), tmp_path)


def test_ensure_model_from_env_downloads_once(server, packed: Path, tmp_path: Path, capsys) -> None:
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()
    env = {"CARCLF_MODEL_URL": f"{server.url}/colour.zip", "CARCLF_MODEL_SHA256": digest}
    models = tmp_path / "models"
    assert ensure_model_from_env(models, env={}) is None
    first = ensure_model_from_env(models, env=env)
    assert "downloading" in capsys.readouterr().err
    assert json.loads((first / SOURCE_MARKER).read_text())["sha256"] == digest
    assert ensure_model_from_env(models, env=env) == first
    assert ensure_model_from_env(models, env={"CARCLF_MODEL_URL": env["CARCLF_MODEL_URL"]}) == first
    assert server.requests == ["/colour.zip"]
    assert sorted(p.name for p in models.iterdir()) == ["colour"]


def test_cli_pack_unpack_fetch(bundle_dir: Path, server, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "colour.zip"
    assert main(["bundle", "pack", str(bundle_dir), str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and zipfile.is_zipfile(out)
    assert main(["bundle", "unpack", str(out), "--models-dir", str(tmp_path / "models")]) == 0
    assert "installed bundle colour" in capsys.readouterr().out
    assert load_bundle(tmp_path / "models" / "colour").class_names == ["red", "green", "blue"]
    assert main(["bundle", "fetch", f"{server.url}/colour.zip", "--models-dir", str(tmp_path / "fetched")]) == 0
    assert "installed bundle colour" in capsys.readouterr().out
    assert main(["bundle", "fetch", f"{server.url}/nope.zip", "--models-dir", str(tmp_path / "fetched")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot download") and "HTTP 404" in err and err.count("\n") == 1
    not_a_bundle = tmp_path / "photo.zip"
    not_a_bundle.write_bytes(b"not a zip")
    assert main(["bundle", "unpack", str(not_a_bundle), "--models-dir", str(tmp_path / "models")]) == 2
    assert "not a readable zip" in capsys.readouterr().err
    assert main(["bundle", "pack", str(tmp_path / "nothing"), str(tmp_path / "x.zip")]) == 2
    assert "no such bundle folder" in capsys.readouterr().err
