"""Public mode in a real browser (`streamlit run app.py` + Debian chromium), the issue's end-to-end check.

A visitor without the password sees no server-path box, no upload and no launch button. The owner logs in,
uploads a zip of real photos, launches a tiny training, watches it finish and downloads the bundle file. Hostile
archives (made here) are each refused with their message. A second, fresh app with an empty models folder
receives the bundle file by upload, and a photo is then predicted with it.
"""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from browser_helpers import browser_page, choose, go_to, launch_tiny_run, streamlit_server, wait_idle

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery staple"
BRANDS = "cars/vidhyagupta_car_brands_5"
CAR = "cars/vidhyagupta_car_brands_5/audi/test_66.jpg"
# Milliseconds to wait for a model-backed answer and for a whole tiny training run on 2 shared cores.
ANSWER_TIMEOUT_MS = 180_000
TRAIN_TIMEOUT_MS = 600_000
# A small archive entry cap for the server, so "too many files" is cheap to build.
MAX_FILES = 40


def _server_env(tmp_path, name: str) -> tuple[dict, dict]:
    folders = {key: tmp_path / name / key for key in ("home", "models", "runs", "augment", "datasets")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    env = {"CARCLF_MODE": "public", "CARCLF_OWNER_PASSWORD": PASSWORD, "CARCLF_MAX_FILES": str(MAX_FILES),
           "CARCLF_MODELS_DIR": str(folders["models"]), "CARCLF_RUNS_DIR": str(folders["runs"]),
           "CARCLF_AUGMENT_DIR": str(folders["augment"]), "CARCLF_DATASETS_DIR": str(folders["datasets"])}
    return env, folders


def _photos_zip(shared_data, path, per_class=3):
    with zipfile.ZipFile(path, "w") as archive:
        for brand in ("audi", "bmw"):
            for photo in sorted((shared_data / BRANDS / brand).iterdir())[:per_class]:
                archive.write(photo, f"brands/{brand}/{photo.name}")
    return path


def _hostile_zips(shared_data, folder) -> dict[str, object]:
    """name -> path of an archive that must be refused (each built here, in memory, from one real photo)."""
    photo = sorted((shared_data / BRANDS / "audi").iterdir())[0].read_bytes()
    made = {}

    def write(name, fill):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            fill(archive)
        made[name] = folder / f"{name}.zip"
        made[name].write_bytes(buffer.getvalue())

    write("dotdot", lambda z: (z.writestr("a/1.jpg", photo), z.writestr("a/2.jpg", photo),
                               z.writestr("../escape.jpg", photo)))
    write("absolute", lambda z: (z.writestr("a/1.jpg", photo), z.writestr("/tmp/abs.jpg", photo)))

    def symlink(z):
        z.writestr("a/1.jpg", photo)
        info = zipfile.ZipInfo("a/link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")

    write("symlink", symlink)
    write("too_many", lambda z: [z.writestr(f"a/{i}.jpg", photo) for i in range(MAX_FILES + 5)])
    write("bomb", lambda z: z.writestr("a/zeros.jpg", b"\0" * 300_000_000))

    write("encrypted", lambda z: (z.writestr("a/1.jpg", photo), z.writestr("b/1.jpg", photo)))
    made["encrypted"].write_bytes(_mark_encrypted(made["encrypted"].read_bytes()))
    whole = _photos_zip(shared_data, folder / "whole.zip")
    made["truncated"] = folder / "truncated.zip"
    made["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return made


def _mark_encrypted(data: bytes) -> bytes:
    """The zip with every entry's "encrypted" flag set (bit 0 of the flags, in local and central headers),
    as a password-protected archive has; zipfile cannot write real encryption."""
    data = bytearray(data)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = data.find(signature)
        while start != -1:
            data[start + flags_at] |= 0x1
            start = data.find(signature, start + 4)
    return bytes(data)


def _login(page):
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Owner login").click()
    sidebar.get_by_label("Owner password").fill(PASSWORD)
    sidebar.get_by_role("button", name="Log in").click()
    sidebar.get_by_text("Logged in as the owner").wait_for(timeout=ANSWER_TIMEOUT_MS)
    wait_idle(page)


def _main_upload(page, path):
    # The page's own dataset uploader comes first; the Train page's run-archive importer follows in an expander.
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
    wait_idle(page, ANSWER_TIMEOUT_MS)


def _remove_main_uploads(page):
    for button in page.locator('[data-testid="stMain"]').get_by_role("button", name="Remove ").all():
        button.click()
    wait_idle(page)


def test_public_app_end_to_end(shared_data, tmp_path):
    env, folders = _server_env(tmp_path, "first")
    bundle_file = tmp_path / "downloaded.zip"
    with streamlit_server(folders["home"], env, tmp_path / "first.log") as (url, _), \
            browser_page(folders["home"]) as page:
        # A visitor: no server-path box and no launch button, on every page that takes photos.
        page.goto(f"{url}/train")
        page.get_by_role("heading", name="Train", exact=True).wait_for(timeout=ANSWER_TIMEOUT_MS)
        wait_idle(page, ANSWER_TIMEOUT_MS)
        for title in ("Train", "Evaluate", "Data"):
            go_to(page, title)
            assert page.get_by_role("textbox", name="folder").count() == 0, title
            assert page.get_by_role("button", name="Launch training").count() == 0, title
        go_to(page, "Train")
        page.get_by_text("log in as the owner").wait_for()
        go_to(page, "Data")  # only the owner adds datasets
        page.get_by_text("Only the app's owner can upload datasets here.").wait_for()
        assert page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').count() == 0

        # The owner logs in. Hostile archives: each refused with its own one-line message, nothing left behind.
        _login(page)
        go_to(page, "Data")
        messages = {}
        errors = page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')
        for name, path in _hostile_zips(shared_data, tmp_path).items():
            _main_upload(page, path)
            errors.first.wait_for(timeout=ANSWER_TIMEOUT_MS)
            assert errors.count() == 1, (name, errors.all_inner_texts())
            messages[name] = errors.first.locator('[data-testid="stMarkdownContainer"]').inner_text()
            assert "encountered an error" not in messages[name], (name, messages[name])  # no crash, a refusal
            _remove_main_uploads(page)
            errors.first.wait_for(state="detached")  # the next message cannot be this one
        assert len(set(messages.values())) == len(messages), messages  # each says what is wrong with it
        assert all("\n" not in text.strip() for text in messages.values()), messages
        assert list(folders["datasets"].iterdir()) == []

        # The owner uploads real photos, launches a tiny run, watches it finish, downloads the bundle.
        go_to(page, "Train")
        _main_upload(page, _photos_zip(shared_data, tmp_path / "brands.zip"))
        page.get_by_text("2 classes, 6 photos").wait_for(timeout=ANSWER_TIMEOUT_MS)
        choose(page, "Backbone", "efficientnet_lite0")
        launch_tiny_run(page, ANSWER_TIMEOUT_MS)
        page.get_by_text("Model bundle:").wait_for(timeout=TRAIN_TIMEOUT_MS)
        wait_idle(page)
        with page.expect_download(timeout=ANSWER_TIMEOUT_MS) as download:
            page.locator('[data-testid="stMain"]').get_by_role("button", name="Download model file").click()
        download.value.save_as(bundle_file)
        assert zipfile.is_zipfile(bundle_file)

    # A second, fresh app with an empty models folder receives the file and predicts with it.
    env, folders = _server_env(tmp_path, "second")
    with streamlit_server(folders["home"], env, tmp_path / "second.log") as (url, _), \
            browser_page(folders["home"]) as page:
        page.goto(url)
        wait_idle(page, ANSWER_TIMEOUT_MS)
        _login(page)
        page.locator('[data-testid="stSidebar"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(bundle_file))
        wait_idle(page, ANSWER_TIMEOUT_MS)
        page.get_by_text("added and selected").wait_for(timeout=ANSWER_TIMEOUT_MS)
        assert [p.name for p in folders["models"].iterdir() if p.is_dir()]
        _main_upload(page, shared_data / CAR)
        verdict = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text="confident").first
        verdict.wait_for(timeout=ANSWER_TIMEOUT_MS)
        assert any(brand in verdict.inner_text().lower() for brand in ("audi", "bmw")), verdict.inner_text()
