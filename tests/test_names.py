"""carclf.names: one rule turns any text into a safe folder/file name, and refuses unsafe names."""

from __future__ import annotations

import pytest

from carclf.augment import safe_name
from carclf.bundle import check_bundle_name, safe_bundle_name
from carclf.datasets import check_dataset_name
from carclf.errors import BundleError, ConfigError, DataError
from carclf.names import check_id, is_safe_id, safe_id
from carclf.runs import slugify

HOSTILE = ["../../etc/passwd", "/abs/path", "..", ".hidden", "a/b", "a\\b", "name\x00nul", "trailing.", "", " "]


@pytest.mark.parametrize("text, expected", [
    ("My run #2", "My-run-2"),
    ("../../etc/passwd", "etc-passwd"),
    ("v1.2_final", "v1.2_final"),
    ("a..b", "a.b"),
    ("  --Audi A4--  ", "Audi-A4"),
    ("Ford vs Ferrari \u00e9t\u00e9", "Ford-vs-Ferrari-t"),  # letters outside ASCII are dropped
    ("\u65e5\u672c", "fallback"),
])
def test_safe_id_turns_any_text_into_a_safe_name(text, expected):
    result = safe_id(text, fallback="fallback")
    assert result == expected and is_safe_id(result)


def test_safe_id_is_short_and_every_hostile_text_becomes_safe():
    assert len(safe_id("x" * 500, "f")) == 100
    assert safe_id("a" * 39 + "-b", "f", max_chars=40) == "a" * 39  # never ends in a separator
    for text in HOSTILE:
        assert is_safe_id(safe_id(text, fallback="f")), text


@pytest.mark.parametrize("name", HOSTILE)
def test_unsafe_names_are_refused_by_every_kind_of_name(name):
    assert not is_safe_id(name)
    with pytest.raises(ValueError, match="invalid thing name"):
        check_id(name, "thing")
    with pytest.raises(BundleError):
        check_bundle_name(name)
    with pytest.raises(DataError):
        check_dataset_name(name)


def test_every_kind_of_name_follows_the_one_rule():
    assert slugify("My run #2") == "my-run-2" and slugify("???") == "run"
    assert safe_bundle_name("My run #2") == "My-run-2" and safe_bundle_name("///") == "model"
    assert safe_name(" my aug ") == "my-aug"
    with pytest.raises(ConfigError):
        safe_name("///")
    assert check_bundle_name("cars-20261202-143237") == "cars-20261202-143237"
