"""Augmentation config <-> albumentations ``Compose``: validation, strength, presets, schedule.

An ``AugConfig`` is a list of albumentations 2.0.8 transforms by class name with their own argument names
(``{name, p, params}``) plus a global ``strength``. It is validated once, at the edge, against
``TRANSFORMS`` and the library itself: albumentations 2.x only *warns* about unknown or renamed 1.x
arguments and then runs with defaults, so every warning while building a transform is an error here.

``strength`` (0..2) multiplies each transform's probability and moves the magnitudes the registry
knows how to scale (``TransformSpec.neutral``) towards or away from "no change"; 0 is the identity.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import albumentations as A
import cv2
import numpy as np
import yaml

from carclf.augment_registry import RENAMED_ARGUMENTS, RENAMED_TRANSFORMS, TRANSFORMS, TransformSpec
from carclf.errors import ConfigError
from carclf.names import safe_id

# ``strength`` range: 0 = no augmentation, 1 = the config as written, 2 = twice as likely and strong.
MIN_STRENGTH, MAX_STRENGTH = 0.0, 2.0

# Photos are first shrunk so their short side is this multiple of the model input: augmenting a
# 4000x3000 photo costs 100x more than a 290 px one and the extra detail is thrown away anyway.
PRE_RESIZE_FACTOR = 1.3

# The pre-resize uses bilinear: 10x faster than INTER_AREA for a 640 px photo (0.6 vs 6 ms, measured
# here) and the shrink factor is under ~2 after the JPEG draft decode, so it barely aliases.
PRE_RESIZE_INTERPOLATION = cv2.INTER_LINEAR

# The final resize to img_size x img_size: INTER_AREA averages (antialiases) when shrinking, like the
# Pillow resize of the evaluation path (carclf.images.load_rgb_array), so train and eval pixels match.
FINAL_INTERPOLATION = cv2.INTER_AREA

# Built-in presets shipped in the package, one YAML file per name.
PRESETS_DIR = Path(__file__).resolve().parent / "presets" / "augment"

# File types a config can be saved as / loaded from.
YAML_SUFFIXES = (".yaml", ".yml")
JSON_SUFFIXES = (".json",)

# Keys of a config file and of each transform entry.
CONFIG_KEYS = frozenset({"strength", "transforms"})
ENTRY_KEYS = frozenset({"name", "p", "params"})

# A user's config name becomes a file name: letters, digits, "-" and "_" only, at most this long.
MAX_NAME_LENGTH = 64

# catch_warnings() swaps a process-wide filter list: builds from several tf.data threads must take turns.
_BUILD_LOCK = threading.Lock()


def _canonical(value: Any) -> Any:
    """Lists become tuples (recursively) so a config loaded from JSON/YAML equals the one saved."""
    if isinstance(value, (list, tuple)):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _plain(value: Any) -> Any:
    """Tuples become lists for JSON/YAML."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TransformEntry:
    """One albumentations transform: its class name, probability and constructor arguments."""

    name: str  # an albumentations class name, a key of TRANSFORMS
    p: float = 0.5  # probability of applying it to an image (before strength scaling)
    params: Mapping[str, Any] = field(default_factory=dict)  # the class's own argument names and values

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _canonical(dict(self.params)))
        object.__setattr__(self, "p", float(self.p))

    def to_dict(self) -> dict:
        return {"name": self.name, "p": self.p, "params": _plain(dict(self.params))}


@dataclass(frozen=True)
class AugConfig:
    """A training augmentation: transforms applied in order, then scaled by ``strength``."""

    transforms: tuple[TransformEntry, ...] = ()
    strength: float = 1.0  # MIN_STRENGTH..MAX_STRENGTH; 0 = identity, 1 = as written

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))
        object.__setattr__(self, "strength", float(self.strength))

    def to_dict(self) -> dict:
        return {"strength": self.strength, "transforms": [t.to_dict() for t in self.transforms]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AugConfig":
        """Parse and validate; raises ConfigError naming the bad key or value."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an augmentation config must be a mapping with {sorted(CONFIG_KEYS)}, "
                              f"got {type(data).__name__}.")
        unknown = set(data) - CONFIG_KEYS
        if unknown:
            raise ConfigError(f"unknown key(s) {sorted(unknown)} in the augmentation config; "
                              f"allowed: {sorted(CONFIG_KEYS)}.")
        entries = data.get("transforms") or []
        if not isinstance(entries, (list, tuple)):
            raise ConfigError("'transforms' must be a list of {name, p, params} entries.")
        config = cls(transforms=tuple(_parse_entry(e, i) for i, e in enumerate(entries)),
                     strength=_number(data.get("strength", 1.0), "strength"))
        validate(config)
        return config


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} must be a number, got {value!r}.")
    return float(value)


def _parse_entry(entry: Any, index: int) -> TransformEntry:
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"transform #{index + 1} must be a mapping with a 'name' (and optional 'p', 'params').")
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        raise ConfigError(f"transform #{index + 1} ({entry['name']}): unknown key(s) {sorted(unknown)}; "
                          f"put transform arguments under 'params'.")
    params = entry.get("params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"transform #{index + 1} ({entry['name']}): 'params' must be a mapping.")
    spec = _spec(str(entry["name"]))
    p = _number(entry.get("p", spec.default_p), f"{spec.name}.p")
    return TransformEntry(name=spec.name, p=p, params=dict(params))


def _spec(name: str) -> TransformSpec:
    """The registry entry for ``name``, or a ConfigError listing the offered transforms."""
    if name in TRANSFORMS:
        return TRANSFORMS[name]
    hint = f" (albumentations 2.x: use {RENAMED_TRANSFORMS[name]})" if name in RENAMED_TRANSFORMS else ""
    raise ConfigError(f"unknown augmentation transform {name!r}{hint}; choose from: {', '.join(TRANSFORMS)}.")


def validate(config: AugConfig) -> AugConfig:
    """Check every entry by building it; raises ConfigError. Returns the config for chaining."""
    if not MIN_STRENGTH <= config.strength <= MAX_STRENGTH:
        raise ConfigError(f"strength must be between {MIN_STRENGTH} and {MAX_STRENGTH}, got {config.strength}.")
    for entry in config.transforms:
        _instantiate(entry, img_size=64)
    return config


def _check_arguments(spec: TransformSpec, entry: TransformEntry) -> None:
    unknown = sorted(set(entry.params) - spec.accepted)
    if not unknown:
        return
    hints = [f"{name} -> {RENAMED_ARGUMENTS[name]}" for name in unknown if name in RENAMED_ARGUMENTS]
    fixed = [name for name in unknown if name in spec.image_sized]
    why = (f" ({', '.join(fixed)} is set from the image size)" if fixed else "") + (
        f" (albumentations 1.x names; in 2.x: {'; '.join(hints)})" if hints else "")
    raise ConfigError(f"{spec.name}: unknown argument(s) {', '.join(unknown)}{why}; "
                      f"valid arguments: {', '.join(sorted(spec.accepted)) or 'none besides p'}.")


def _check_bounds(spec: TransformSpec, entry: TransformEntry) -> None:
    """Our own range check first: clearer than pydantic's message, and the bounds the UI shows."""
    if not 0.0 <= entry.p <= 1.0:
        raise ConfigError(f"{spec.name}: p must be between 0 and 1, got {entry.p}.")
    for param in spec.params:
        value = entry.params.get(param.name)
        values = value if isinstance(value, tuple) else (value,)
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if any(not _within(number, param) for number in numbers):
            low = "-inf" if param.low is None else param.low
            high = "inf" if param.high is None else param.high
            interval = f"{'[' if param.low_inclusive else '('}{low}, {high}{']' if param.high_inclusive else ')'}"
            raise ConfigError(f"{spec.name}.{param.name}={value!r} is out of range: each value must be in {interval}.")
        if param.odd and any(int(n) != n or (n != 0 and int(n) % 2 == 0) for n in numbers):
            raise ConfigError(f"{spec.name}.{param.name}={value!r}: kernel sizes must be odd whole numbers.")
        if param.kind == "range" and len(numbers) == 2 == len(values) and numbers[0] > numbers[1]:
            raise ConfigError(f"{spec.name}.{param.name}={value!r}: the first value (low) must not exceed the "
                              "second (high).")


def _within(number: float, param) -> bool:
    if param.low is not None and (number < param.low or (number == param.low and not param.low_inclusive)):
        return False
    if param.high is not None and (number > param.high or (number == param.high and not param.high_inclusive)):
        return False
    return True


def _instantiate(entry: TransformEntry, img_size: int, p: Optional[float] = None) -> A.BasicTransform:
    """Build one albumentations transform, with every library warning turned into a ConfigError."""
    spec = _spec(entry.name)
    _check_arguments(spec, entry)
    _check_bounds(spec, entry)
    kwargs = dict(entry.params)
    kwargs.update({name: (img_size, img_size) for name in spec.image_sized})
    with _BUILD_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return spec.cls(**kwargs, p=entry.p if p is None else p, strict=True)
        except (ValueError, TypeError, UserWarning) as error:
            message = str(error).strip().splitlines()
            detail = "; ".join(line.strip() for line in message if line.strip() and "errors.pydantic" not in line)
            raise ConfigError(f"{spec.name}: invalid arguments {_plain(dict(entry.params))}: {detail}") from error


def scale_entry(entry: TransformEntry, strength: float) -> TransformEntry:
    """``entry`` at ``strength``: p multiplied (capped at 1), known magnitudes moved from/to neutral."""
    if strength == 1.0:
        return entry
    spec = _spec(entry.name)
    params = dict(entry.params)
    for name, neutral in spec.neutral.items():
        param = spec.param(name)
        value = params.get(name, param.default)
        if value is None:
            continue
        params[name] = _scale_value(value, neutral, strength, param.low, param.high, param.integer)
    return replace(entry, p=min(1.0, entry.p * strength), params=params)


def _scale_value(value: Any, neutral: float, strength: float, low, high, integer: bool) -> Any:
    if isinstance(value, tuple):
        return tuple(_scale_value(v, neutral, strength, low, high, integer) for v in value)
    scaled = neutral + (value - neutral) * strength
    if low is not None:
        scaled = max(low, scaled)
    if high is not None:
        scaled = min(high, scaled)
    return int(round(scaled)) if integer or isinstance(value, int) and float(scaled).is_integer() else scaled


def pre_resize_side(img_size: int) -> int:
    """Short side photos are shrunk to before the user transforms run."""
    return int(round(img_size * PRE_RESIZE_FACTOR))


def build_compose(
    config: Optional[AugConfig],
    img_size: int,
    seed: Optional[int] = None,
    train: bool = True,
    strength: Optional[float] = None,
) -> A.Compose:
    """The albumentations pipeline for one image size: pre-resize, user transforms, final resize.

    ``train=False`` (or no config, or strength 0) gives only the resize. ``seed`` makes the random
    draws reproducible (``Compose(seed=...)``); ``strength`` overrides ``config.strength``.
    """
    if strength is None:
        strength = config.strength if config is not None else 0.0
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise ConfigError(f"strength must be between {MIN_STRENGTH} and {MAX_STRENGTH}, got {strength}.")
    user: list = []
    if train and config is not None and strength > 0:
        user = [_instantiate(scale_entry(entry, strength), img_size) for entry in config.transforms]
    stages = []
    if user:
        stages.append(A.SmallestMaxSize(max_size=pre_resize_side(img_size), interpolation=PRE_RESIZE_INTERPOLATION))
    stages += user + [A.Resize(img_size, img_size, interpolation=FINAL_INTERPOLATION)]
    return A.Compose(stages, seed=seed)


def to_albumentations(config: AugConfig, img_size: int) -> dict:
    """The full pipeline in albumentations' own serialisation (``A.from_dict`` rebuilds it)."""
    return A.to_dict(build_compose(config, img_size))


# ---------------------------------------------------------------------------------------------------------
# Files, presets and named configs


def load_aug_config(source: Union[str, Path, Mapping, AugConfig, None]) -> AugConfig:
    """An AugConfig from a preset name, a .yaml/.json file, a dict, or an AugConfig; None is "default"."""
    if source is None:
        source = "default"
    if isinstance(source, AugConfig):
        return validate(source)
    if isinstance(source, Mapping):
        return AugConfig.from_dict(source)
    path = Path(source)
    if path.suffix.lower() not in YAML_SUFFIXES + JSON_SUFFIXES:
        presets = list_presets()
        if str(source) not in presets:
            raise ConfigError(f"unknown augmentation preset {str(source)!r}; built-in presets: "
                              f"{', '.join(presets)}; or give a .yaml/.json file.")
        path = presets[str(source)]
    if not path.is_file():
        raise ConfigError(f"{path}: augmentation config file not found.")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() in JSON_SUFFIXES else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot parse the augmentation config ({error}).") from error
    try:
        return AugConfig.from_dict(data or {})
    except ConfigError as error:
        raise ConfigError(f"{path.name}: {error}") from error


def save_aug_config(config: AugConfig, path: Union[str, Path]) -> Path:
    """Write ``config`` as YAML or JSON (by suffix); ``load_aug_config`` reads back an equal config."""
    validate(config)
    path = Path(path)
    data = config.to_dict()
    if path.suffix.lower() in JSON_SUFFIXES:
        text = json.dumps(data, indent=2) + "\n"
    elif path.suffix.lower() in YAML_SUFFIXES:
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        raise ConfigError(f"{path.name}: save augmentation configs as .yaml, .yml or .json.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def list_presets() -> dict[str, Path]:
    """Built-in preset name -> file."""
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def safe_name(name: str) -> str:
    """A config name usable as a file name, or ConfigError."""
    cleaned = safe_id(name.strip(), fallback="", max_chars=MAX_NAME_LENGTH)
    if not cleaned:
        raise ConfigError(f"{name!r} is not a usable config name: use letters, digits, '-' or '_'.")
    return cleaned


def save_named(config: AugConfig, name: str, directory: Union[str, Path]) -> Path:
    """Save a user's config as ``directory/<safe name>.yaml``; built-in preset names are reserved."""
    stem = safe_name(name)
    if stem in list_presets():
        raise ConfigError(f"{stem!r} is a built-in preset name; choose another name.")
    return save_aug_config(config, Path(directory) / f"{stem}.yaml")


def list_named(directory: Union[str, Path, None] = None) -> dict[str, Path]:
    """Built-in presets, then the user's saved configs in ``directory`` (name -> file)."""
    named = list_presets()
    if directory is not None and Path(directory).is_dir():
        for path in sorted(Path(directory).iterdir()):
            if path.suffix.lower() in YAML_SUFFIXES + JSON_SUFFIXES and path.stem not in named:
                named[path.stem] = path
    return named


def load_named(name: str, directory: Union[str, Path, None] = None) -> AugConfig:
    """Load a preset or a saved config by name."""
    named = list_named(directory)
    if name not in named:
        raise ConfigError(f"no augmentation config named {name!r}; available: {', '.join(named)}.")
    return load_aug_config(named[name])


# ---------------------------------------------------------------------------------------------------------
# Runtime: strength schedule and the per-image augmenter used inside tf.data


@dataclass(frozen=True)
class AugSchedule:
    """Weaker augmentation for the last ``last_epochs`` epochs (fine details settle on near-real images)."""

    last_epochs: int = 0  # how many final epochs use final_strength (0 = never change)
    final_strength: float = 0.3  # strength during those epochs

    def strength_at(self, epoch: int, total_epochs: int, base: float) -> float:
        """Strength for 0-based ``epoch`` of ``total_epochs``."""
        if self.last_epochs > 0 and epoch >= total_epochs - self.last_epochs:
            return self.final_strength
        return base


class Augmenter:
    """Applies an AugConfig to uint8 images from tf.data worker threads.

    ``strength`` is the shared mutable holder: a Keras callback assigns it between epochs and the
    running pipeline picks it up on the next image, without rebuilding the ``tf.data`` graph. Each
    thread keeps its own Compose per strength; a per-image seed makes the draws independent of which
    thread handles which image, so a seeded pipeline is reproducible.
    """

    def __init__(self, config: AugConfig, img_size: int):
        self.config = validate(config)
        self.img_size = int(img_size)
        self.strength = config.strength
        self._local = threading.local()
        build_compose(self.config, self.img_size)  # fail now, not in a worker thread

    def set_strength(self, strength: float) -> None:
        """Change the strength used from the next image on (validated here, in the caller's thread)."""
        build_compose(self.config, self.img_size, strength=strength)
        self.strength = float(strength)

    def compose(self) -> A.Compose:
        """This thread's Compose for the current strength."""
        cache = getattr(self._local, "composes", None)
        if cache is None:
            cache = self._local.composes = {}
        strength = self.strength
        if strength not in cache:
            cache[strength] = build_compose(self.config, self.img_size, strength=strength)
        return cache[strength]

    def __call__(self, image: np.ndarray, seed: Optional[int] = None) -> np.ndarray:
        compose = self.compose()
        if seed is not None:
            compose.set_random_seed(int(seed))
        return compose(image=image)["image"]


def describe(config: AugConfig) -> list[str]:
    """One human line per transform, for logs and the dashboard."""
    return [f"{e.name}(p={e.p:g}{''.join(f', {k}={v}' for k, v in e.params.items())})" for e in config.transforms]


def entries(names: Iterable[str]) -> tuple[TransformEntry, ...]:
    """Entries with the library defaults for ``names`` (a starting point for a new config)."""
    return tuple(TransformEntry(name=_spec(n).name, p=_spec(n).default_p) for n in names)
