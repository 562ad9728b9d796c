"""The dashboard in public mode (CARCLF_MODE=public): no server paths, uploads only, owner-only management,
a throttled owner password; and local mode keeping its folder box. Real photos from ../shared/data, zipped
inside the tests; hostile archives are built here too."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app_helpers import APP, RUN_TIMEOUT_S, app_env, open_page, texts  # noqa: F401  (app_env is a fixture)
from carclf.ui import access, diagnostics

PASSWORD = "correct horse battery staple"
BRANDS = "cars/vidhyagupta_car_brands_5"
# The pages that take photos, and the key of their (local-mode) server-folder box.
FOLDER_KEYS = {"train.py": "train_data", "evaluate.py": "eval_data", "data.py": "data_folder"}


@pytest.fixture
def public_env(app_env, tmp_path, monkeypatch):
    """app_env in public mode with an owner password and an empty workspace."""
    datasets = tmp_path / "datasets"
    monkeypatch.setenv("CARCLF_MODE", "public")
    monkeypatch.setenv("CARCLF_OWNER_PASSWORD", PASSWORD)
    monkeypatch.setenv("CARCLF_DATASETS_DIR", str(datasets))
    return {**app_env, "datasets": datasets}


def photos_zip(shared_data, brands=("audi", "bmw"), per_class=3, top="brands") -> bytes:
    """A .zip of real photos, one folder per class under one top folder (as people zip a folder)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for brand in brands:
            for photo in sorted((shared_data / BRANDS / brand).iterdir())[:per_class]:
                archive.write(photo, f"{top}/{brand}/{photo.name}")
    return buffer.getvalue()


def page_text(at: AppTest) -> str:
    """Everything the page sent to the browser (labels, help texts, messages), as text."""
    parts = []

    def walk(node) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(parts)


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, [b.label for b in at.button]
    return matches[0]


def login(at: AppTest, password: str) -> AppTest:
    at.text_input(key="owner_password").input(password)
    button(at, "Log in").click().run()
    assert not at.exception, at.exception
    return at


def upload(at: AppTest, key: str, name: str, data: bytes) -> AppTest:
    at.file_uploader(key=key).set_value((name, data, "application/zip")).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("script", sorted(FOLDER_KEYS))
def test_visitor_sees_no_server_path_box_and_no_launch_button(public_env, tmp_path, script):
    at = open_page(script)
    assert not at.error, texts(at.error)
    assert [t.key for t in at.text_input if t.key == FOLDER_KEYS[script]] == []
    assert all("folder" not in t.label.lower() for t in at.text_input)
    assert [u.key for u in at.get("file_uploader")] == []  # only the owner adds datasets or models...
    assert any("Only the app's owner can upload datasets" in c.value for c in at.caption)  # ...and it says so
    assert str(tmp_path) not in page_text(at)  # no server path anywhere (runs folder, models folder...)
    assert "Launch training" not in [b.label for b in at.button]
    assert "Rescan" not in [b.label for b in at.button]  # it would forget every visitor's scans
    if script == "train.py":
        assert any("log in as the owner" in text for text in texts(at.info))


def test_public_mode_from_st_secrets_and_no_secrets_is_quiet(app_env, monkeypatch):
    monkeypatch.delenv("CARCLF_MODE", raising=False)
    local = open_page("data.py")  # no secrets.toml anywhere: local mode, and not a word about secrets
    assert [t.key for t in local.text_input] == ["data_folder"]
    assert not local.error and not local.warning
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    at.secrets["CARCLF_MODE"] = "public"
    at.switch_page("pages/data.py")
    at.run()
    assert not at.exception
    assert [t.key for t in at.text_input if t.key == "data_folder"] == []
    assert "public mode" in page_text(at)


def test_wrong_password_is_refused_then_rate_limited(public_env):
    at = open_page("data.py")
    for _ in range(access.SESSION_FREE_FAILURES):
        login(at, "guess")
        assert texts(at.error) == ["Wrong password."]
    login(at, "guess")
    assert texts(at.error) == [f"Wrong password; try again in {access.SESSION_FIRST_WAIT_S} s."]
    login(at, PASSWORD)  # even the right password must wait now
    assert len(at.error) == 1 and texts(at.error)[0].startswith("Too many wrong passwords; try again in ")
    assert "Log out" not in [b.label for b in at.button]
    other = open_page("data.py")  # another visitor is not locked out by this one's guesses
    login(other, PASSWORD)
    assert not other.error
    assert "Log out" in [b.label for b in other.button]


def test_throttle_doubles_the_wait_and_resets_on_success():
    throttle = access.Throttle(free=2, first_wait_s=30, max_wait_s=100)
    assert [throttle.fail(now=0.0) for _ in range(2)] == [0, 0]
    assert throttle.fail(now=0.0) == 30
    assert throttle.fail(now=0.0) == 60
    assert throttle.fail(now=0.0) == 100  # capped
    assert throttle.wait_s(now=99.5) == 1 and throttle.wait_s(now=100.0) == 0
    throttle.succeed()
    assert throttle.wait_s(now=0.0) == 0 and throttle.fail(now=0.0) == 0


@pytest.mark.parametrize("mode", ["public", "local"])
def test_a_visitors_clear_cache_message_clears_nothing_in_public_mode(app_env, monkeypatch, mode):
    """Streamlit runs AppSession._handle_clear_cache_request for a "clear_cache" message from any browser."""
    from types import SimpleNamespace

    from streamlit.runtime.app_session import AppSession

    monkeypatch.setenv("CARCLF_MODE", mode)
    open_page("predict.py")  # the page frame installs the guard
    loads = []

    @st.cache_resource
    def model():
        loads.append(1)
        return object()

    model()
    forgotten = []
    session = SimpleNamespace(_session_state=SimpleNamespace(clear=lambda: forgotten.append(1)))
    AppSession._handle_clear_cache_request(session)
    model()
    assert len(loads) == (1 if mode == "public" else 2) and len(forgotten) == (0 if mode == "public" else 1)


def test_login_failures_survive_a_cache_clear(public_env):
    at = open_page("predict.py")
    for _ in range(access.GLOBAL_FREE_FAILURES + 1):
        access._global_throttle().fail()
    st.cache_resource.clear()  # what a forged "clear_cache" did before the guard: the count must not reset
    login(at, PASSWORD)
    assert any("Too many wrong passwords" in text for text in texts(at.error))
    assert access.OWNER_KEY not in at.session_state


def test_without_a_password_management_is_off_with_one_line(public_env, monkeypatch):
    monkeypatch.delenv("CARCLF_OWNER_PASSWORD")
    at = open_page("train.py")
    assert not at.error
    reasons = [text for text in texts(at.info) if "no owner password" in text]
    assert len(reasons) == 1 and "\n" not in reasons[0]
    assert "owner_password" not in [t.key for t in at.text_input]
    assert "Launch training" not in [b.label for b in at.button]


def test_owner_sees_the_launch_form_and_logs_out(public_env):
    at = open_page("train.py")
    login(at, PASSWORD)
    assert not at.error, texts(at.error)
    assert "Launch training" in [b.label for b in at.button]
    assert "bundle_upload" in [u.key for u in at.get("file_uploader")]
    button(at, "Log out").click().run()
    assert "Launch training" not in [b.label for b in at.button]


def test_uploaded_zip_of_photos_becomes_a_dataset_on_every_page(public_env, shared_data, tmp_path):
    at = login(open_page("data.py"), PASSWORD)
    assert "data_folder_upload" in [u.key for u in at.get("file_uploader")]
    upload(at, "data_folder_upload", "brands.zip", photos_zip(shared_data))
    assert not at.error, texts(at.error)
    assert any("Imported dataset" in text and "brands" in text for text in texts(at.success))
    metrics = {m.label: m.value for m in at.metric}  # the new dataset is selected and scanned at once
    assert metrics["Classes"] == "2" and metrics["Photos"] == "6"
    assert str(tmp_path) not in page_text(at)
    for script, key in (("train.py", "train_data_dataset"), ("evaluate.py", "eval_data_dataset")):
        page = open_page(script)
        assert any(option.startswith("brands") for option in page.selectbox(key=key).options), script


@pytest.mark.parametrize("member", ["../escape.jpg", "/etc/evil.jpg"])
def test_hostile_zip_is_refused_in_one_line_and_leaves_nothing(public_env, shared_data, member, tmp_path):
    buffer = io.BytesIO()
    photo = sorted((shared_data / BRANDS / "audi").iterdir())[0].read_bytes()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(2):
            archive.writestr(f"cars/audi/{index}.jpg", photo)
        archive.writestr(member, photo)
    at = upload(login(open_page("data.py"), PASSWORD), "data_folder_upload", "evil.zip", buffer.getvalue())
    assert len(at.error) == 1 and "\n" not in at.error[0].value, texts(at.error)
    assert not at.success
    datasets = public_env["datasets"]
    assert not datasets.exists() or list(datasets.iterdir()) == []
    assert not list(tmp_path.rglob("escape.jpg")) and not list(tmp_path.rglob("evil.jpg"))


def test_local_mode_keeps_the_folder_box_and_offers_datasets(app_env, monkeypatch, tmp_path):
    monkeypatch.delenv("CARCLF_MODE", raising=False)
    monkeypatch.setenv("CARCLF_DATASETS_DIR", str(tmp_path / "datasets"))
    for script, key in FOLDER_KEYS.items():
        at = open_page(script)
        assert key in [t.key for t in at.text_input], script
        assert f"{key}_dataset" in [s.key for s in at.selectbox], script
        assert f"{key}_upload" in [u.key for u in at.get("file_uploader")], script
    assert "Launch training" in [b.label for b in open_page("train.py").button]


def test_diagnostics_line_and_the_python_check(public_env, monkeypatch):
    at = open_page("data.py")
    line = [c.value for c in at.sidebar.caption if "Python" in c.value]
    assert len(line) == 1 and "TensorFlow 2." in line[0] and "public mode" in line[0], line
    assert diagnostics.python_supported((3, 12)) and diagnostics.python_supported((3, 13))
    assert not diagnostics.python_supported((3, 14))
    monkeypatch.setattr(diagnostics, "FIRST_UNSUPPORTED_PYTHON", (3, 0))  # pretend this Python is too new
    at = open_page("data.py")
    assert len(at.error) == 1 and "3.12 or 3.13" in at.error[0].value
    assert not at.title  # the page stopped before drawing anything else


@pytest.mark.slow
def test_one_training_at_a_time_and_only_the_owner_stops_or_deletes(public_env, shared_data):
    owner = login(open_page("train.py"), PASSWORD)
    upload(owner, "train_data_upload", "brands.zip", photos_zip(shared_data))
    assert any("2 classes, 6 photos" in text for text in texts(owner.success)), texts(owner.success)
    owner.selectbox(key="train_preset").set_value("quick").run()  # slow enough to be running when checked
    owner.selectbox(key="train_quick_img_size").set_value(64)
    owner.selectbox(key="train_quick_aug").set_value("none")
    owner.number_input(key="train_quick_total_epochs").set_value(200)
    button(owner, "Launch training").click().run()
    assert not owner.exception and not owner.error, texts(owner.error)
    (run_dir,) = list(public_env["runs"].iterdir())
    owner.run()
    assert "Launch training" not in [b.label for b in owner.button]  # a second launch is refused...
    assert any(run_dir.name in text and "one run at a time" in text for text in texts(owner.info))  # ...saying why
    visitor = open_page("train.py")
    assert visitor.button(key="train_stop").disabled  # a visitor cannot stop the owner's run
    assert f"train_delete_{run_dir.name}" not in [b.key for b in visitor.button]
    owner.button(key="train_stop").click().run()
    assert not owner.exception, owner.exception
    button(owner, "Delete run").click().run()  # asks first
    assert run_dir.exists() and any("Delete run" in text for text in texts(owner.warning))
    button(owner, "Yes, delete").click().run()
    assert not owner.exception and not run_dir.exists()


def test_only_the_owner_deletes_a_dataset_after_confirming(public_env, shared_data):
    upload(login(open_page("data.py"), PASSWORD), "data_folder_upload", "brands.zip", photos_zip(shared_data))
    (dataset,) = list(public_env["datasets"].iterdir())
    at = open_page("data.py")
    at.selectbox(key="data_folder_dataset").set_value(dataset.name).run()
    assert at.metric  # a visitor browses the dataset...
    assert not [b for b in at.button if b.label.startswith("Delete dataset")]  # ...but cannot delete it
    login(at, PASSWORD)
    at.selectbox(key="data_folder_dataset").set_value(dataset.name).run()
    button(at, f"Delete dataset {dataset.name}").click().run()
    assert dataset.exists()  # not before "Yes"
    button(at, "Yes, delete").click().run()
    assert not at.exception and not dataset.exists()
    assert at.selectbox(key="data_folder_dataset").options == []


def _bundle_file(tmp_path) -> Path:
    """A real (tiny, untrained) bundle packed into one file, made outside the app's models folder."""
    from app_helpers import make_bundle
    from carclf.bundle_file import pack_bundle

    folder = make_bundle(tmp_path / "elsewhere", "tiny", ["audi", "bmw"], ["Audi", "BMW"])
    return Path(pack_bundle(folder, tmp_path / "tiny.zip"))


def test_owner_uploads_a_bundle_file_which_is_selected_offered_and_deletable(public_env, tmp_path):
    data = _bundle_file(tmp_path).read_bytes()
    at = login(open_page("data.py"), PASSWORD)
    truncated = upload(at, "bundle_upload", "broken.zip", data[: len(data) // 2])
    assert len(truncated.error) == 1 and "\n" not in truncated.error[0].value
    assert [p for p in public_env["models"].iterdir() if p.is_dir()] == []  # nothing half-written
    at = login(open_page("data.py"), PASSWORD)
    upload(at, "bundle_upload", "tiny.zip", data)
    assert not at.error, texts(at.error)
    assert (public_env["models"] / "tiny" / "model.keras").is_file()
    assert at.selectbox(key="carclf_model_picker").value.endswith("tiny")  # selected at once
    assert any("added and selected" in text for text in texts(at.sidebar.success))
    assert [d.label for d in at.get("download_button")] == ["Download model file"]
    button(at, "Delete this model").click().run()
    button(at, "Yes, delete").click().run()
    assert not at.exception and not (public_env["models"] / "tiny").exists()
    assert at.selectbox(key="carclf_model_picker").value == "default"


def test_a_broken_model_url_is_one_clear_line_and_the_app_still_works(public_env, monkeypatch):
    monkeypatch.setenv("CARCLF_MODEL_URL", "http://127.0.0.1:9/missing.zip")  # port 9: nothing listens
    at = open_page("data.py")
    assert not at.exception
    errors = [text for text in texts(at.sidebar.error) if "CARCLF_MODEL_URL" in text]
    assert len(errors) == 1 and "\n" not in errors[0], texts(at.error)
    assert at.title[0].value == "Data"


def test_model_url_is_fetched_once_at_start_and_offered(public_env, tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    packed = _bundle_file(tmp_path)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(packed.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        monkeypatch.setenv("CARCLF_MODEL_URL", f"http://127.0.0.1:{server.server_port}/{packed.name}")
        at = open_page("data.py")
        server.shutdown()
    assert not at.exception and not at.error, texts(at.error)
    assert (public_env["models"] / "tiny" / "model.keras").is_file()
    assert any(option.startswith("tiny") for option in at.selectbox(key="carclf_model_picker").options)


def test_settings_parse_sizes_fail_closed_and_hide_server_paths(monkeypatch, tmp_path):
    from carclf.errors import ConfigError
    from carclf.ui import settings

    assert [settings.parse_bytes(v) for v in ("200M", "1.5G", "5000", 7)] == [200_000_000, 1_500_000_000, 5000, 7]
    for bad in ("lots", "-1M", "0"):
        with pytest.raises(ConfigError):
            settings.parse_bytes(bad)
    monkeypatch.setenv("CARCLF_RUNS_DIR", str(tmp_path / "runs"))
    line = f"cannot read {tmp_path / 'runs' / 'brands-1' / 'log.txt'}"
    monkeypatch.delenv("CARCLF_MODE", raising=False)
    assert settings.mode() == "local" and settings.hide_paths(line) == line and settings.quota() is None
    monkeypatch.setenv("CARCLF_MODE", "Public")
    assert settings.is_public() and settings.hide_paths(line) == "cannot read brands-1/log.txt"
    monkeypatch.setenv("CARCLF_MODE", "pubilc")  # a typo must not open the server
    assert settings.is_public() and "pubilc" in settings.mode_warning()


def test_a_long_server_path_in_a_system_error_is_hidden_before_it_is_cut(monkeypatch, tmp_path):
    from carclf.errors import MAX_QUOTED_PATH, describe_os_error
    from carclf.ui import settings

    runs = tmp_path / ("deep-" * 30) / "runs"  # the server's own folder, longer than a quoted path may be
    monkeypatch.setenv("CARCLF_RUNS_DIR", str(runs))
    monkeypatch.setenv("CARCLF_MODE", "public")
    missing = runs / "brands-1" / "history.csv"
    assert len(str(missing)) > MAX_QUOTED_PATH
    error = FileNotFoundError(2, "No such file or directory", str(missing))
    assert describe_os_error(error, settings.hide_paths) == "No such file or directory: brands-1/history.csv"
    assert str(missing)[:40] in settings.hide_paths(describe_os_error(error))  # cut first: the folder went unrecognised
    import sys

    traceback_line = f'File "{sys.prefix}/lib/python3.11/site-packages/keras/src/ops/core.py", line 9'
    assert sys.prefix not in settings.hide_paths(traceback_line)  # a crashed run's log shows no install paths


def test_a_full_workspace_refuses_an_upload_with_a_clear_line(public_env, shared_data, monkeypatch):
    monkeypatch.setenv("CARCLF_WORKSPACE_QUOTA", "20K")  # less than the six real photos (about 43 KB)
    at = upload(login(open_page("data.py"), PASSWORD), "data_folder_upload", "brands.zip", photos_zip(shared_data))
    assert len(at.error) == 1 and "workspace is full" in at.error[0].value, texts(at.error)
    datasets = public_env["datasets"]
    assert not datasets.exists() or [p for p in datasets.iterdir() if not p.name.startswith(".")] == []
    assert not datasets.exists() or list(datasets.iterdir()) == []  # no temporary leftovers either


def test_the_download_file_is_packed_once_per_bundle_version_and_unpacks(tmp_path):
    import os

    from app_helpers import make_bundle
    from carclf.bundle_file import unpack_bundle
    from carclf.ui import bundle_io

    folder = make_bundle(tmp_path / "models", "tiny", ["audi", "bmw"], ["Audi", "BMW"])
    first = bundle_io.packed_bundle(folder)
    assert bundle_io.packed_bundle(folder) == first  # the same file for every session
    os.utime(folder, (1, 1))  # a retrained bundle under the same name (new mtime)
    second = bundle_io.packed_bundle(folder)
    assert second != first and not first.exists()  # repacked, the old file gone
    unpacked = unpack_bundle(second, tmp_path / "elsewhere")
    assert (unpacked / "model.keras").is_file()


def test_an_unreadable_secrets_file_fails_closed(monkeypatch, tmp_path):
    from streamlit import config

    from carclf.ui import settings

    broken = tmp_path / "secrets.toml"
    broken.write_text('CARCLF_MODE = "local"\nCARCLF_OWNER_PASSWORD = "unterminated\n')
    monkeypatch.delenv("CARCLF_MODE", raising=False)
    saved = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(broken)])
    try:
        assert settings.mode() == "public" and "cannot be parsed" in settings.mode_warning()
    finally:
        config.set_option("secrets.files", saved)
    assert settings.mode() == "local" and settings.mode_warning() == ""


def test_the_dataset_chosen_on_one_page_is_chosen_on_the_next(public_env, shared_data):
    upload(login(open_page("data.py"), PASSWORD), "data_folder_upload", "brands.zip", photos_zip(shared_data))
    (dataset,) = list(public_env["datasets"].iterdir())
    at = open_page("data.py")
    at.selectbox(key="data_folder_dataset").set_value(dataset.name).run()
    for script, key in (("evaluate.py", "eval_data_dataset"), ("train.py", "train_data_dataset")):
        at.switch_page(f"pages/{script}").run()
        assert not at.exception and at.selectbox(key=key).value == dataset.name, script
    at.selectbox(key="train_data_dataset").set_value(None).run()  # cleared on purpose: it stays cleared...
    at.run()
    assert at.selectbox(key="train_data_dataset").value is None
    at.switch_page("pages/data.py").run()  # ...and the next page starts empty too
    assert at.selectbox(key="data_folder_dataset").value is None
    assert open_page("evaluate.py").selectbox(key="eval_data_dataset").value is None  # a new session knows nothing
