"""The augmentation transforms carclf offers, described from the installed albumentations itself.

Each albumentations 2.x transform declares its parameters in a pydantic ``InitSchema`` (types, bounds)
and its defaults on ``__init__``. ``TRANSFORMS`` reads both for a curated list of transforms that make
sense for car photos, so the dashboard builds its sliders from ``ParamSpec``s instead of hard-coding
ranges that would drift from the library. Only what the schema cannot say (a sensible slider range
for an unbounded value, the value at which a parameter does nothing) is written here, per transform.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional, Union

import albumentations as A
import annotated_types

# Schema fields that are not augmentation settings: ``p`` is a field of every entry, ``strict`` is set by
# carclf itself, and the rest only affect masks/bounding boxes, which a classifier never has.
NOT_USER_PARAMS = frozenset({"p", "strict", "mask_interpolation", "fill_mask"})

# Parameter kinds a user interface can draw.
KINDS = ("float", "int", "bool", "choice", "range", "other")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a transform, as a UI needs it."""

    name: str
    kind: str  # one of KINDS; "range" is a (low, high) pair, "other" is accepted but has no widget
    default: Any  # from __init__; tuples stay tuples
    low: Optional[float] = None  # hard lower bound from the schema (None: unbounded)
    high: Optional[float] = None  # hard upper bound from the schema (None: unbounded)
    low_inclusive: bool = True  # False: values must be strictly greater than low
    high_inclusive: bool = True  # False: values must be strictly less than high
    ui_low: Optional[float] = None  # slider range: the hard bounds, or a sensible range when unbounded
    ui_high: Optional[float] = None
    choices: tuple = ()  # for kind "choice"
    integer: bool = False  # for "range": the pair holds ints
    optional: bool = False  # None is an accepted value
    odd: bool = False  # whole numbers that must be odd (kernel sizes): a slider should step by 2
    help: str = ""  # first sentence of the library's own docstring for this argument


@dataclass(frozen=True)
class TransformSpec:
    """One offered transform: its albumentations class and its parameters."""

    name: str  # the albumentations class name, also the name in config files
    cls: type
    group: str  # for grouping in the UI
    default_p: float
    params: tuple[ParamSpec, ...]  # user-settable parameters (with widgets or kind "other")
    accepted: frozenset[str]  # every argument name a config entry may set
    neutral: Mapping[str, float] = field(default_factory=dict)  # value at which a parameter does nothing
    image_sized: tuple[str, ...] = ()  # parameters carclf fills from the image size (not user settable)
    help: str = ""

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)


@dataclass(frozen=True)
class _Curation:
    """What carclf adds to the schema for one transform."""

    group: str
    neutral: Mapping[str, float] = field(default_factory=dict)  # strength 0 moves values here
    slider: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # UI range for unbounded values
    bounds: Mapping[str, tuple[Optional[float], Optional[float]]] = field(default_factory=dict)  # bounds the
    # schema enforces in code (a field_validator) rather than declaring them
    image_sized: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()  # parameters left at the library default because carclf depends on it
    odd: tuple[str, ...] = ()  # kernel sizes the library only accepts odd


# The transforms offered, in UI order. Parameters not listed under ``neutral`` are never scaled by
# ``strength`` (kernel sizes must stay odd, hole counts whole...): only the probability is.
CURATED: dict[str, _Curation] = {
    "HorizontalFlip": _Curation("geometry"),
    "Affine": _Curation(
        "geometry",
        neutral={"scale": 1.0, "translate_percent": 0.0, "rotate": 0.0, "shear": 0.0},
        slider={"scale": (0.5, 1.5), "translate_percent": (-0.3, 0.3), "translate_px": (-64, 64),
                "rotate": (-45, 45), "shear": (-30, 30), "fill": (0, 255)},
    ),
    "RandomResizedCrop": _Curation(
        "geometry", neutral={"scale": 1.0, "ratio": 1.0}, slider={"ratio": (0.5, 2.0)}, image_sized=("size",)
    ),
    "Perspective": _Curation("geometry", neutral={"scale": 0.0}, slider={"scale": (0.0, 0.3), "fill": (0, 255)}),
    "RandomBrightnessContrast": _Curation(
        "colour",
        neutral={"brightness_limit": 0.0, "contrast_limit": 0.0},
        slider={"brightness_limit": (-0.5, 0.5), "contrast_limit": (-0.5, 0.5)},
        bounds={"brightness_limit": (-1.0, 1.0), "contrast_limit": (-1.0, None)},
    ),
    "HueSaturationValue": _Curation(
        "colour",
        neutral={"hue_shift_limit": 0.0, "sat_shift_limit": 0.0, "val_shift_limit": 0.0},
        slider={"hue_shift_limit": (-60, 60), "sat_shift_limit": (-80, 80), "val_shift_limit": (-60, 60)},
    ),
    "ColorJitter": _Curation(
        "colour",
        neutral={"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0},
        slider={"brightness": (0.5, 1.5), "contrast": (0.5, 1.5), "saturation": (0.5, 1.5)},
        bounds={"brightness": (0.0, None), "contrast": (0.0, None), "saturation": (0.0, None),
                "hue": (-0.5, 0.5)},
    ),
    "RandomGamma": _Curation("colour", neutral={"gamma_limit": 100.0}, slider={"gamma_limit": (50, 150)}),
    "CLAHE": _Curation("colour", slider={"clip_limit": (1, 8), "tile_grid_size": (2, 16)}),
    "ToGray": _Curation("colour", fixed=("num_output_channels",)),  # models take 3 channels
    "GaussNoise": _Curation("noise and blur", neutral={"std_range": 0.0, "mean_range": 0.0}),
    "MotionBlur": _Curation("noise and blur", slider={"blur_limit": (3, 25)}, odd=("blur_limit",)),
    "GaussianBlur": _Curation("noise and blur", slider={"blur_limit": (0, 25), "sigma_limit": (0.1, 5.0)}),
    "Sharpen": _Curation("noise and blur", neutral={"alpha": 0.0, "lightness": 1.0},
                         slider={"kernel_size": (3, 9), "sigma": (0.1, 3.0)}),
    "ImageCompression": _Curation("noise and blur", neutral={"quality_range": 100.0}),
    "CoarseDropout": _Curation("occlusion", slider={"fill": (0, 255), "num_holes_range": (1, 16),
                                                    "hole_height_range": (0.0, 0.5),
                                                    "hole_width_range": (0.0, 0.5)}),
    "RandomShadow": _Curation("weather", neutral={"shadow_intensity_range": 0.0},
                              slider={"shadow_dimension": (3, 10)}),
    "RandomFog": _Curation("weather"),
    # drop_length must stay below the (pre-resized) image height: 30 px is safe from img_size 32 up.
    "RandomRain": _Curation("weather", slider={"drop_length": (1, 30), "drop_width": (1, 5),
                                               "blur_value": (1, 15)}),
}

# Transform and argument names from albumentations 1.x that 2.x removed or renamed: named in errors so
# an old config gets a useful hint instead of silently running with defaults.
RENAMED_TRANSFORMS = {
    "Cutout": "CoarseDropout",
    "JpegCompression": "ImageCompression",
    "RandomBrightness": "RandomBrightnessContrast",
    "RandomContrast": "RandomBrightnessContrast",
    "Flip": "HorizontalFlip",
    "ShiftScaleRotate": "Affine",
}
RENAMED_ARGUMENTS = {
    "var_limit": "std_range (a fraction of 255)",
    "mean": "mean_range",
    "max_holes": "num_holes_range",
    "min_holes": "num_holes_range",
    "max_height": "hole_height_range",
    "min_height": "hole_height_range",
    "max_width": "hole_width_range",
    "min_width": "hole_width_range",
    "fill_value": "fill",
    "quality_lower": "quality_range",
    "quality_upper": "quality_range",
    "always_apply": "p=1.0",
    "cval": "fill",
    "mode": "border_mode",
    "height": "size=(height, width)",
    "width": "size=(height, width)",
    "fog_coef_lower": "fog_coef_range",
    "fog_coef_upper": "fog_coef_range",
    "num_shadows_lower": "num_shadows_limit",
    "num_shadows_upper": "num_shadows_limit",
    "slant_lower": "slant_range",
    "slant_upper": "slant_range",
}

_NUMBER_TYPES = (int, float)


def _flatten_union(annotation: Any) -> list:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _flatten_union(arg)]
    if origin is typing.Annotated:
        return _flatten_union(typing.get_args(annotation)[0])
    return [annotation]


def _is_pair(member: Any) -> Optional[type]:
    """The element type when ``member`` is ``tuple[X, X]`` of numbers, else None."""
    if typing.get_origin(member) is not tuple:
        return None
    args = typing.get_args(member)
    if len(args) == 2 and args[1] is not Ellipsis and all(a in _NUMBER_TYPES for a in args):
        return int if all(a is int for a in args) else float
    return None


def _kind(annotation: Any) -> tuple[str, tuple, bool, bool]:
    """(kind, choices, integer, optional) for a schema annotation."""
    members = _flatten_union(annotation)
    optional = type(None) in members
    members = [m for m in members if m is not type(None)]
    literals = [m for m in members if typing.get_origin(m) is Literal]
    if len(members) == 1 and literals:
        values = typing.get_args(literals[0])
        return "choice", tuple(a for a in values if a is not None), False, optional or None in values
    if members == [bool]:
        return "bool", (), False, optional
    pairs = [t for t in (_is_pair(m) for m in members) if t is not None]
    if pairs:
        return "range", (), all(t is int for t in pairs), optional
    if int in members and float not in members:
        return "int", (), True, optional
    if float in members or int in members:
        return "float", (), False, optional
    return "other", (), False, optional


def _bounds(field_info: Any) -> tuple[Optional[float], Optional[float], bool, bool]:
    """Hard bounds declared in the schema (annotated_types Ge/Gt/Le/Lt, or albumentations'
    ``check_range_bounds`` validator): (low, high, low_inclusive, high_inclusive)."""
    low = high = None
    low_inclusive = high_inclusive = True
    for item in field_info.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt):
            low, low_inclusive = item.gt, False
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt):
            high, high_inclusive = item.lt, False
        func = getattr(item, "func", None)
        if func is not None and func.__closure__:
            names = inspect.getclosurevars(func).nonlocals
            if "min_val" in names:
                low, high = names["min_val"], names.get("max_val")
                low_inclusive = names.get("min_inclusive", True)
                high_inclusive = names.get("max_inclusive", True)
    return low, high, low_inclusive, high_inclusive


def _docstring_args(cls: type) -> dict[str, str]:
    """``{argument: first sentence}`` from the Google-style "Args:" section of the class docstring."""
    doc = inspect.getdoc(cls) or ""
    section = doc.split("Args:", 1)[1] if "Args:" in doc else ""
    helps: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        match = re.match(r"^ {4}(\w+)\s*(\(.*?\))?:\s*(.*)$", line)
        if match:
            current = match.group(1)
            helps[current] = match.group(3).strip()
        elif re.match(r"^\S", line):
            break  # next section (Targets:, Note: ...)
        elif current and line.strip() and not line.strip().startswith(("*", "-")):
            if not helps[current].endswith("."):
                helps[current] = f"{helps[current]} {line.strip()}".strip()
    return {name: _first_sentence(text) for name, text in helps.items()}


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not the one in "i.e." or "e.g.")."""
    sentence = re.split(r"(?<!i\.e)(?<!e\.g)\.\s", text, maxsplit=1)[0].rstrip(".")
    return f"{sentence}." if sentence else ""


# An exclusive bound (``gt=0``) is shown on a slider this fraction of the range inside it.
EXCLUSIVE_MARGIN = 0.01


def _ui_range(kind: str, low, high, default, slider: Optional[tuple], inclusive: tuple[bool, bool]
              ) -> tuple[Optional[float], Optional[float]]:
    """The slider range: hard bounds when both exist, else the curated range, else around the default."""
    if kind not in ("float", "int", "range"):
        return None, None
    ui_low, ui_high = _ui_range_inclusive(kind, low, high, default, slider)
    span = (ui_high - ui_low) * EXCLUSIVE_MARGIN
    if not inclusive[0] and ui_low == low:
        ui_low = low + (1 if kind == "int" else span)
    if not inclusive[1] and ui_high == high:
        ui_high = high - (1 if kind == "int" else span)
    return ui_low, ui_high


def _ui_range_inclusive(kind: str, low, high, default, slider: Optional[tuple]) -> tuple[float, float]:
    if low is not None and high is not None and slider is None:
        return low, high
    if slider is not None:
        ui_low, ui_high = slider
        return (ui_low if low is None else max(low, ui_low)), (ui_high if high is None else min(high, ui_high))
    values = [v for v in (default if isinstance(default, tuple) else (default,)) if isinstance(v, _NUMBER_TYPES)]
    magnitude = max([abs(v) for v in values] + [1])
    ui_low = low if low is not None else (-2 * magnitude if any(v < 0 for v in values) else 0)
    ui_high = high if high is not None else 2 * magnitude
    return ui_low, ui_high


def _derive(name: str, curation: _Curation) -> TransformSpec:
    cls = getattr(A, name)
    signature = inspect.signature(cls.__init__)
    helps = _docstring_args(cls)
    params = []
    for field_name, field_info in cls.InitSchema.model_fields.items():
        if field_name in NOT_USER_PARAMS or field_name in curation.image_sized + curation.fixed:
            continue
        kind, choices, integer, optional = _kind(field_info.annotation)
        low, high, low_inclusive, high_inclusive = _bounds(field_info)
        if field_name in curation.bounds:
            low, high = curation.bounds[field_name]
        parameter = signature.parameters.get(field_name)
        default = None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default
        ui_low, ui_high = _ui_range(kind, low, high, default, curation.slider.get(field_name),
                                    (low_inclusive, high_inclusive))
        params.append(ParamSpec(
            name=field_name, kind=kind, default=default, low=low, high=high, low_inclusive=low_inclusive,
            high_inclusive=high_inclusive, ui_low=ui_low, ui_high=ui_high,
            choices=choices, integer=integer or kind == "int", optional=optional, odd=field_name in curation.odd,
            help=helps.get(field_name, ""),
        ))
    p_default = signature.parameters["p"].default
    doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
    return TransformSpec(
        name=name,
        cls=cls,
        group=curation.group,
        default_p=float(p_default),
        params=tuple(params),
        accepted=frozenset(p.name for p in params),
        neutral=dict(curation.neutral),
        image_sized=curation.image_sized,
        help=doc,
    )


# name -> TransformSpec for every offered transform, derived once at import from the installed library.
TRANSFORMS: dict[str, TransformSpec] = {name: _derive(name, curation) for name, curation in CURATED.items()}
