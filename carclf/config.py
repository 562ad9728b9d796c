"""The training config: one flat, commented set of values, saved as ``config.yaml`` in every run.

As in nanoGPT, everything a run needs to be reproduced lives in one place and is written next to its
results. Config flows one way: preset YAML -> user YAML -> CLI/form overrides -> ``TrainConfig`` (validated
once, here) -> training. Unknown keys and wrong types raise ``ConfigError`` naming the key.

Presets are data: ``carclf/presets/train/<name>.yaml`` (``fast`` and ``quick`` for CPU, ``full`` for GPU).
A preset lists only the values it changes from the defaults below.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

from carclf.errors import ConfigError
from carclf.optimizers import OPTIMIZERS

# Folder of preset YAML files shipped inside the package.
PRESET_DIR = Path(__file__).resolve().parent / "presets" / "train"
# Preset name -> YAML file: every file in PRESET_DIR is a preset.
PRESETS = {path.stem: path for path in sorted(PRESET_DIR.glob("*.yaml"))}
# Preset used when the user names none: small and fast enough for a laptop CPU.
DEFAULT_PRESET = "quick"
# Activations a dense head block may use (names Keras understands and that serialise safely).
ACTIVATIONS = ("relu", "gelu", "swish", "elu", "tanh", "linear")
# How ``StageConfig.unfreeze`` may be written (new notation; old ints/fractions are converted on load).
UNFREEZE_FORMS = '"none" (head only), "all" (whole backbone), a percentage like "30%" or a layer count like "12 layers"'
# Smallest input side accepted: below this the backbones' stride-32 feature map vanishes.
MIN_IMG_SIZE = 32
# Largest input side and batch accepted: beyond them a typo (an extra zero or three) asks for more memory than
# any machine has, and the run dies deep in TensorFlow (or waits forever) instead of saying so up front.
MAX_IMG_SIZE = 1024
MAX_BATCH_SIZE = 4096


@dataclass
class DenseBlock:
    """One hidden layer of the head: Dense -> optional BatchNorm -> activation -> Dropout."""

    units: int = 256  # width of the dense layer
    activation: str = "relu"  # one of ACTIVATIONS
    batchnorm: bool = False  # BatchNorm between Dense and activation
    dropout: float = 0.0  # dropout after the activation


@dataclass
class HeadConfig:
    """The classifier head on top of the backbone's 4-D feature map."""

    pooling: Literal["avg", "max", "avgmax"] = "avg"  # global pooling; avgmax = both, concatenated
    batchnorm: bool = False  # BatchNorm right after pooling
    dense: list[DenseBlock] = field(default_factory=list)  # hidden blocks; empty = linear classifier
    dropout: float = 0.2  # dropout before the final softmax layer


@dataclass
class StageConfig:
    """One training stage: a fresh optimizer, a learning rate and how much of the backbone is trainable."""

    epochs: int = 5  # epochs in this stage
    learning_rate: float = 1e-3  # initial learning rate of the stage's optimizer
    unfreeze: str = "none"  # "none" = head only, "all" = whole backbone, "30%" = that share of its layers, "12 layers" = the last 12 (see parse_unfreeze)
    patience: int = 3  # early stopping patience (epochs without val_loss improvement) in this stage
    cached_views: int = 0  # 0 = photos go through the backbone every epoch; K >= 1 (head stages only, unfreeze "none") = the frozen backbone runs once over K views of each training photo (the photo itself, then K-1 augmented) and once over the validation photos, and the head trains on those features in seconds
    lr_schedule: Literal["plateau", "cosine"] = "plateau"  # plateau = constant rate cut by ReduceLROnPlateau; cosine = warm-up then cosine decay to 0 over the stage's epochs (ReduceLROnPlateau off)
    warmup_epochs: float = 0.0  # cosine only: epochs (fractions allowed) of linear warm-up from 0 at the stage start
    img_size: int = 0  # 0 = the run's img_size; else this stage trains at this side (progressive resizing: fine-tune small, finish at the run's size)


def _default_stages() -> list[StageConfig]:
    return [StageConfig(epochs=8, learning_rate=1e-3, unfreeze="none"),
            StageConfig(epochs=4, learning_rate=1e-4, unfreeze="20%")]


@dataclass
class TrainConfig:
    """Every value a training run uses. Defaults are a sensible CPU run; presets adjust them."""

    # --- data ---
    data: str = ""  # dataset folder (folder-per-class, or Kaggle train.csv + train/)
    name: str = "run"  # run name: becomes part of the run id and the bundle name
    val_fraction: float = 0.2  # share of each class held out for validation (stratified)
    val_data: str = ""  # a separate validation folder with the same classes; set = train on all of data, val_fraction unused
    seed: int = 42  # seeds the split, augmentation and weight initialisation
    class_display_names: dict[str, str] = field(default_factory=dict)  # class folder -> human name
    max_images_per_class: int = 0  # 0 = all; >0 caps each class (quick experiments on big data)
    # --- model ---
    backbone: str = "efficientnet_lite0"  # a name from carclf.backbones.list_backbones()
    weights: Literal["imagenet", "none"] = "imagenet"  # pretrained ImageNet weights or random init
    img_size: int = 0  # square input side in pixels; 0 = the backbone's native size
    head: HeadConfig = field(default_factory=HeadConfig)
    # --- optimisation ---
    stages: list[StageConfig] = field(default_factory=_default_stages)  # stage 1 head, then fine-tuning
    batch_size: int = 16  # images per optimizer step: the GLOBAL batch, split across GPUs when there are several
    micro_batch_size: int = 0  # most photos computed at once (0 = no limit): a larger batch runs in equal slices whose gradients are averaged: less memory, not quite the same training (see the README)
    optimizer: str = "adam"  # a name from carclf.optimizers.OPTIMIZERS
    weight_decay: float = 0.0  # used by adamw / sgd
    label_smoothing: float = 0.1  # softens one-hot targets: less over-confidence on small data
    early_stopping: bool = True  # stop a stage when val_loss stalls for its patience; restore the best
    reduce_lr_factor: float = 0.5  # ReduceLROnPlateau factor; 1.0 disables it
    reduce_lr_patience: int = 2  # epochs without val_loss improvement before the LR is cut
    min_learning_rate: float = 1e-6  # ReduceLROnPlateau floor
    # --- augmentation ---
    augmentation: Union[str, dict] = "light"  # preset name, path of an augmentation YAML, or inline dict
    aug_weaken_last: int = 1  # final epochs of the schedule trained with weakened augmentation
    # --- hardware ---
    mixed_precision: Union[Literal["auto"], bool] = "auto"  # auto = on when a GPU is present
    xla: Union[Literal["auto"], bool] = "auto"  # auto = jit_compile on GPU only
    # --- evaluation and output ---
    tta: int = 1  # test-time-augmentation views averaged for the final validation score (1 = off; 0 read as 1)
    models_dir: str = "models"  # where the exported bundle goes

    @property
    def accumulation_steps(self) -> int:
        """Equal slices per optimizer step: the fewest that keep each within ``micro_batch_size`` (1 = whole batch)."""
        if not self.micro_batch_size or self.batch_size <= self.micro_batch_size:
            return 1
        return next(steps for steps in range(2, self.batch_size + 1)
                    if self.batch_size % steps == 0 and self.batch_size // steps <= self.micro_batch_size)

    @property
    def slice_size(self) -> int:
        """Photos computed at once: the batch divided into its ``accumulation_steps`` equal slices."""
        return self.batch_size // self.accumulation_steps

    @property
    def epochs_total(self) -> int:
        """Planned epochs over all stages (early stopping may finish sooner)."""
        return sum(stage.epochs for stage in self.stages)

    def to_dict(self) -> dict:
        """Plain dict (YAML-ready) of every value."""
        return dataclasses.asdict(self)

    def save(self, path) -> Path:
        """Write the config as commented-free YAML (the presets hold the comments)."""
        import yaml

        from carclf.atomic import atomic_write_text

        return atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    def replace(self, **overrides) -> "TrainConfig":
        """A validated copy with top-level ``overrides`` applied (None values are ignored)."""
        data = self.to_dict()
        data.update({key: value for key, value in overrides.items() if value is not None})
        return config_from_dict(data)


def config_from_dict(data: Mapping[str, Any]) -> TrainConfig:
    """Build and validate a ``TrainConfig`` from a (possibly partial) mapping."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a training config must be a mapping of keys to values, got {type(data).__name__}.")
    config = _build(TrainConfig, data, "config")
    validate(config)
    return config


def load_config(path=None, preset: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Defaults <- preset YAML <- ``path`` YAML <- ``overrides`` (top-level keys, None ignored), validated.

    With neither ``path`` nor ``preset``, ``DEFAULT_PRESET`` is used. Nested sections (``head``) in a
    later layer replace the earlier one's section key by key.
    """
    layers = []
    if preset is not None or path is None:
        layers.append(read_yaml(preset_path(preset or DEFAULT_PRESET)))
    if path is not None:
        layers.append(read_yaml(Path(path)))
    layers.append({key: value for key, value in (overrides or {}).items() if value is not None})
    merged: dict = {}
    for layer in layers:
        merged = _merge(merged, layer)
    return config_from_dict(merged)


def preset_path(name: str) -> Path:
    """Path of preset ``name``; unknown names raise ``ConfigError`` listing the presets."""
    if name not in PRESETS:
        raise ConfigError(f"unknown training preset {name!r}: choose one of {', '.join(PRESETS)}.")
    return PRESETS[name]


def read_yaml(path: Path) -> dict:
    """A YAML mapping from ``path`` (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not a {type(data).__name__}.")
    return data


def validate(config: TrainConfig) -> None:
    """Check value ranges a type cannot express; raise ``ConfigError`` naming the key and what to do."""
    checks = [
        (1 <= config.batch_size <= MAX_BATCH_SIZE, "batch_size", f"must be from 1 to {MAX_BATCH_SIZE}"),
        (config.micro_batch_size >= 0, "micro_batch_size", "must be 0 (no limit) or at least 1"),
        (0.0 < config.val_fraction < 1.0, "val_fraction", "must be between 0 and 1 (e.g. 0.2)"),
        (config.img_size == 0 or MIN_IMG_SIZE <= config.img_size <= MAX_IMG_SIZE, "img_size",
         f"must be 0 (native) or from {MIN_IMG_SIZE} to {MAX_IMG_SIZE}"),
        (bool(config.stages), "stages", "needs at least one stage"),
        (0.0 <= config.label_smoothing < 1.0, "label_smoothing", "must be in [0, 1)"),
        (0.0 <= config.head.dropout < 1.0, "head.dropout", "must be in [0, 1)"),
        (config.optimizer in OPTIMIZERS, "optimizer", f"must be one of {', '.join(OPTIMIZERS)}"),
        (config.weight_decay >= 0.0, "weight_decay", "must be >= 0"),
        (0.0 < config.reduce_lr_factor <= 1.0, "reduce_lr_factor", "must be in (0, 1]"),
        (config.aug_weaken_last >= 0, "aug_weaken_last", "must be >= 0"),
        (config.tta >= 0, "tta", "must be a number of views >= 1 (1 = off)"),
        (config.max_images_per_class >= 0, "max_images_per_class", "must be >= 0"),
        (config.min_learning_rate >= 0.0, "min_learning_rate", "must be >= 0"),
        (bool(config.name.strip()), "name", "must not be empty"),
    ]
    for index, block in enumerate(config.head.dense):
        checks += [
            (block.units >= 1, f"head.dense[{index}].units", "must be at least 1"),
            (block.activation in ACTIVATIONS, f"head.dense[{index}].activation", f"must be one of {', '.join(ACTIVATIONS)}"),
            (0.0 <= block.dropout < 1.0, f"head.dense[{index}].dropout", "must be in [0, 1)"),
        ]
    for index, stage in enumerate(config.stages):
        parse_unfreeze(stage.unfreeze, f"stages[{index}].unfreeze")  # raises ConfigError listing the accepted forms
        checks += [
            (stage.epochs >= 1, f"stages[{index}].epochs", "must be at least 1"),
            (stage.learning_rate > 0.0, f"stages[{index}].learning_rate", "must be > 0"),
            (stage.patience >= 1, f"stages[{index}].patience", "must be at least 1"),
            (stage.cached_views >= 0, f"stages[{index}].cached_views", "must be 0 (off) or at least 1"),
            (not stage.cached_views or stage.unfreeze == "none", f"stages[{index}].cached_views",
             f"needs unfreeze: none (features can be cached only from a frozen backbone; this stage unfreezes {stage.unfreeze})"),
            (0.0 <= stage.warmup_epochs < stage.epochs, f"stages[{index}].warmup_epochs", "must be >= 0 and below the stage's epochs"),
            (stage.img_size == 0 or MIN_IMG_SIZE <= stage.img_size <= MAX_IMG_SIZE, f"stages[{index}].img_size",
             f"must be 0 (the run's img_size) or from {MIN_IMG_SIZE} to {MAX_IMG_SIZE}"),
        ]
    for ok, key, message in checks:
        if not ok:
            raise ConfigError(f"config {key} {message}.")


def _merge(base: dict, update: Mapping) -> dict:
    """Recursive dict merge: mappings merge key by key, anything else (lists included) replaces."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "augmentation":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build(cls, data: Mapping, where: str):
    """Instantiate dataclass ``cls`` from ``data``, coercing each field by its type hint."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {where} must be a mapping, got {type(data).__name__}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key{'s' if len(unknown) > 1 else ''} {', '.join(f'{where}.{k}' for k in unknown)}; "
            f"valid keys: {', '.join(sorted(known))}."
        )
    values = {key: _coerce(value, hints[key], f"{where}.{key}") if (cls, key) != (StageConfig, "unfreeze")
              else parse_unfreeze(value, f"{where}.{key}") for key, value in data.items()}
    return cls(**values)


def _coerce(value, hint, where: str):
    """Check ``value`` against type ``hint`` (int, float, str, bool, Literal, Union, list, dict, dataclass)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        if not any(value == option and type(value) is type(option) for option in args):  # True is not 1
            raise ConfigError(f"config {where} must be one of {', '.join(map(repr, args))}, got {value!r}.")
        return value
    if origin in (Union, types.UnionType):
        for option in args:  # first option that accepts the value wins (int before float keeps ints ints)
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        names = ", ".join(_type_name(option) for option in args)
        raise ConfigError(f"config {where} must be {names}, got {value!r}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config {where} must be a list, got {value!r}.")
        return [_coerce(item, args[0], f"{where}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config {where} must be a mapping, got {value!r}.")
        return {_coerce(k, args[0], f"{where} key"): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config {where} must be true or false, got {value!r}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config {where} must be a whole number, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config {where} must be a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config {where} must be text, got {value!r}.")
        return value
    if hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config {where} must be a mapping, got {value!r}.")
        return dict(value)
    raise ConfigError(f"config {where}: unsupported type {hint!r}.")  # a bug in this module, not user input


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", str(hint))


def parse_unfreeze(value, where: str = "unfreeze") -> str:
    """The canonical unfreeze string ("none", "all", "30%", "12 layers") for a new- or old-style value.

    Old configs still load: 0 -> "none", an int N -> "N layers", a float in (0, 1) -> that percentage,
    1.0 -> "all". Anything else raises ``ConfigError`` listing the accepted forms.
    """
    problem = f"config {where} must be {UNFREEZE_FORMS}, got {value!r}."
    if isinstance(value, bool):
        raise ConfigError(problem)
    if isinstance(value, int):  # old notation: a layer count
        if value < 0:
            raise ConfigError(problem)
        return "none" if value == 0 else _layers(value)
    if isinstance(value, float):  # old notation: a fraction, 1.0 = the whole backbone
        if not 0.0 < value <= 1.0:
            raise ConfigError(problem)
        return "all" if value == 1.0 else _percent(value * 100)
    if not isinstance(value, str):
        raise ConfigError(problem)
    text = " ".join(value.strip().lower().split())
    if text in ("none", "all"):
        return text
    match = re.fullmatch(r"(\d+(?:\.\d+)?) ?%", text)
    if match and 0.0 < float(match.group(1)) <= 100.0:
        return _percent(float(match.group(1)))
    match = re.fullmatch(r"(\d+) ?layers?", text)
    if match:
        count = int(match.group(1))
        return "none" if count == 0 else _layers(count)
    raise ConfigError(problem)


def unfreeze_count(unfreeze: str, n_layers: int) -> int:
    """How many of ``n_layers`` backbone layers a canonical ``unfreeze`` value makes trainable (0..n_layers)."""
    unfreeze = parse_unfreeze(unfreeze)
    if unfreeze == "none":
        return 0
    if unfreeze == "all":
        return n_layers
    if unfreeze.endswith("%"):
        return min(n_layers, max(1, round(float(unfreeze[:-1]) / 100 * n_layers)))
    return min(n_layers, int(unfreeze.split()[0]))


def _percent(percent: float) -> str:
    return f"{round(percent, 4):g}%"


def _layers(count: int) -> str:
    return "1 layer" if count == 1 else f"{count} layers"


def with_total_epochs(config: TrainConfig, total: int) -> TrainConfig:
    """A copy whose stages share ``total`` epochs in the proportions of the original schedule (>= 1 each)."""
    if isinstance(total, bool) or not isinstance(total, int) or total < len(config.stages):
        raise ConfigError(f"epochs must be a whole number >= {len(config.stages)} (one per stage), got {total!r}.")
    planned = config.epochs_total
    shares = [max(1, round(stage.epochs * total / planned)) for stage in config.stages]
    shares[0] += total - sum(shares)  # rounding remainder goes to the head stage
    while shares[0] < 1:  # the remainder was negative: take it from the longest later stage
        longest = max(range(1, len(shares)), key=lambda i: shares[i])
        shares[longest] -= 1
        shares[0] += 1
    stages = [dataclasses.replace(stage, epochs=epochs) for stage, epochs in zip(config.stages, shares)]
    return dataclasses.replace(config, stages=stages)
