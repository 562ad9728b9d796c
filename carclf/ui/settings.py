"""Where the dashboard keeps its folders: read from environment variables so tests and deployments can
point the app at temporary or mounted folders without editing code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import carclf

# Environment variable -> folder, relative to the working directory unless absolute.
MODELS_DIR_ENV = "CARCLF_MODELS_DIR"  # trained bundles (carclf.bundle layout)
RUNS_DIR_ENV = "CARCLF_RUNS_DIR"  # training runs (carclf.runs layout)
AUGMENT_DIR_ENV = "CARCLF_AUGMENT_DIR"  # augmentation configs saved from the lab
DATA_DIR_ENV = "CARCLF_DATA_DIR"  # the folder the data/train/evaluate forms start with

# Defaults when the variables are unset: the repository's own folders (git-ignored).
DEFAULT_MODELS_DIR = "models"
DEFAULT_RUNS_DIR = "runs"
DEFAULT_AUGMENT_DIR = "augment"

# Public-domain sample images shipped with the package (see their LICENSE.md).
SAMPLES_DIR = Path(carclf.__file__).parent / "resources" / "samples"


def _folder(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default).expanduser()


def models_dir() -> Path:
    """Folder of trained inference bundles."""
    return _folder(MODELS_DIR_ENV, DEFAULT_MODELS_DIR)


def runs_dir() -> Path:
    """Folder of training runs."""
    return _folder(RUNS_DIR_ENV, DEFAULT_RUNS_DIR)


def augment_dir() -> Path:
    """Folder of named augmentation configs saved from the Augmentation lab."""
    return _folder(AUGMENT_DIR_ENV, DEFAULT_AUGMENT_DIR)


def default_data_dir() -> str:
    """The data folder pre-filled in forms ('' when none is configured)."""
    return os.environ.get(DATA_DIR_ENV, "")


# ---- Mode, workspace and limits (public hosting) ----------------------------------------------------------
# Each setting is read from the environment variable of that name, else from the top level of
# .streamlit/secrets.toml (st.secrets; Streamlit Community Cloud's "Secrets" box), else the default.

MODE_ENV = "CARCLF_MODE"  # "local" (default: server folders allowed) or "public" (uploads only, owner password)
MODES = ("local", "public")
DATASETS_DIR_ENV = "CARCLF_DATASETS_DIR"  # named datasets imported from uploaded archives
DEFAULT_DATASETS_DIR = "workspace/datasets"  # git-ignored, like runs/ and models/
MAX_UPLOAD_ENV = "CARCLF_MAX_UPLOAD"  # largest archive or bundle file accepted ("200M", "1G", bytes)
MAX_FILES_ENV = "CARCLF_MAX_FILES"  # most entries in one uploaded archive
MAX_UNPACKED_ENV = "CARCLF_MAX_UNPACKED"  # most bytes one archive may unpack to
QUOTA_ENV = "CARCLF_WORKSPACE_QUOTA"  # disk the datasets, runs and models folders may use together (public mode)
# Defaults sized for Streamlit Community Cloud (Streamlit's own upload cap is 200 MB; the disk is small).
DEFAULT_MAX_UPLOAD = "200M"
DEFAULT_MAX_FILES = 5000
DEFAULT_MAX_UNPACKED = "800M"
DEFAULT_QUOTA = "1G"
# Size suffixes accepted by parse_bytes (decimal, like the sizes the platform documents).
_SIZE_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}


def _secret(name: str):
    """Top-level value of st.secrets, or None. No secrets file is normal: nothing is raised or shown."""
    import streamlit as st

    # False, quietly, when there is no secrets.toml or it cannot be parsed (Streamlit logs the parse error).
    if not st.secrets.load_if_toml_exists():
        return None
    return st.secrets.get(name)


def setting(name: str, default=None):
    """A configuration value: environment variable ``name``, else st.secrets[name], else ``default``."""
    value = os.environ.get(name)
    if value is None or value == "":
        value = _secret(name)
    return default if value is None or value == "" else value


def secrets_unreadable() -> bool:
    """True when a secrets.toml exists but Streamlit cannot parse it (its values are then unknown)."""
    import streamlit as st
    from streamlit import config

    files = [Path(path) for path in config.get_option("secrets.files")]
    return any(path.is_file() for path in files) and not st.secrets.load_if_toml_exists()


def mode() -> str:
    """'local' (default) or 'public'. Fails closed: an unknown value, or a secrets.toml that cannot be read
    (it may hold CARCLF_MODE), counts as 'public', so a typo never opens the server."""
    if not os.environ.get(MODE_ENV) and secrets_unreadable():
        return "public"
    value = str(setting(MODE_ENV, "local")).strip().lower()
    return value if value in MODES else "public"


def mode_warning() -> str:
    """A one-line warning when the mode setting cannot be trusted ('' when it is fine)."""
    if not os.environ.get(MODE_ENV) and secrets_unreadable():
        return "The app's secrets.toml cannot be parsed: running as public, without an owner password. Fix the file."
    value = str(setting(MODE_ENV, "local")).strip().lower()
    return "" if value in MODES else f"{MODE_ENV}={value!r} is not local or public: running as public."


def is_public() -> bool:
    """True in public mode: no server paths, uploads only, management needs the owner password."""
    return mode() == "public"


def datasets_dir() -> Path:
    """Folder of named datasets imported from uploaded archives."""
    return Path(str(setting(DATASETS_DIR_ENV, DEFAULT_DATASETS_DIR))).expanduser()


def parse_bytes(text) -> int:
    """'200M' / '1.5G' / '5000000' -> bytes (decimal units); raises ConfigError on anything else."""
    from carclf.errors import ConfigError

    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGB")
    unit = raw[len(number):]
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"{text!r} is not a size: write e.g. 200M, 1G or a number of bytes.") from None
    if value <= 0:
        raise ConfigError(f"{text!r} is not a size: it must be above zero.")
    return int(value)


def max_upload_bytes() -> int:
    """Largest archive or bundle file accepted from an upload."""
    return parse_bytes(setting(MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD))


def max_upload_mb() -> int:
    """The upload cap in whole megabytes, as st.file_uploader's max_upload_size wants it."""
    return max(1, max_upload_bytes() // 10**6)


def archive_limits():
    """carclf.archive.ArchiveLimits from the settings (files, unpacked bytes; the ratio keeps its default)."""
    from carclf.archive import ArchiveLimits
    from carclf.errors import ConfigError

    try:
        max_files = int(setting(MAX_FILES_ENV, DEFAULT_MAX_FILES))
    except ValueError:
        raise ConfigError(f"{MAX_FILES_ENV} must be a whole number of files.") from None
    unpacked = parse_bytes(setting(MAX_UNPACKED_ENV, DEFAULT_MAX_UNPACKED))
    defaults = ArchiveLimits()
    return ArchiveLimits(max_files=max_files, max_total_bytes=unpacked, max_ratio=defaults.max_ratio,
                         max_member_bytes=min(defaults.max_member_bytes, unpacked))


def workspace_folders() -> list[Path]:
    """The folders the app writes visitors' and the owner's data into (counted by the quota)."""
    return [datasets_dir(), models_dir(), runs_dir()]


def quota():
    """carclf.quota.Quota over the workspace folders in public mode; None (no quota) in local mode."""
    if not is_public():
        return None
    from carclf.quota import Quota

    return Quota(parse_bytes(setting(QUOTA_ENV, DEFAULT_QUOTA)), workspace_folders())


def hide_paths(text: str) -> str:
    """In public mode, ``text`` with the server's own folders cut out of any path in it (visitors must not
    learn the server's layout from a log line or an error); unchanged in local mode."""
    if not is_public() or not text:
        return text
    # Python's own folders too: a crashed run's traceback in its log names every package file it went through
    folders = [datasets_dir(), models_dir(), runs_dir(), augment_dir(), Path.cwd(), Path(sys.prefix),
               Path(sys.base_prefix)]
    forms = {str(form) for folder in folders for form in (folder.absolute(), folder.resolve())} - {os.sep}
    for form in sorted(forms, key=len, reverse=True):  # the longest first: a folder inside the working dir
        text = text.replace(form + os.sep, "").replace(form, ".")
    return text
