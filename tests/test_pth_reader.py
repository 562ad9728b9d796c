"""The torch-free .pth reader: real EfficientNet-Lite files in, arrays out; hostile files rejected."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from carclf.backbones.efficientnet_lite import weights_path
from carclf.backbones.pth_reader import LEGACY_MAGIC, LEGACY_PROTOCOL, read_pth
from carclf.errors import BackboneError

SYS_INFO = {"protocol_version": LEGACY_PROTOCOL, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


@pytest.fixture(scope="module")
def lite0_path() -> str:
    return weights_path("efficientnet_lite0")


def test_reads_real_lite0_state_dict(lite0_path):
    state = read_pth(lite0_path)
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [array for name, array in state.items() if not name.endswith("num_batches_tracked")]
    assert all(array.dtype == np.float32 and np.isfinite(array).all() for array in floats)
    # Trained BatchNorm statistics: variances non-negative (dead channels have 0) and not the untrained 1.0.
    variances = np.concatenate([a for n, a in state.items() if n.endswith("running_var")])
    assert variances.min() >= 0 and not np.allclose(variances, 1.0)
    # Trained conv weights are not all alike (a reader that mixed up offsets would repeat storages).
    assert not np.array_equal(state["_blocks.1._expand_conv.weight"].ravel()[:96], state["_blocks.1._bn0.weight"])


def _legacy_file(path, state_pickle: bytes, header: tuple = (LEGACY_MAGIC, LEGACY_PROTOCOL, SYS_INFO)) -> None:
    path.write_bytes(b"".join(pickle.dumps(item, protocol=2) for item in header) + state_pickle + pickle.dumps([]))


class _RunsShell:
    """A pickle payload that would run a shell command when loaded by a plain unpickler."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_rejects_code_in_the_state_dict(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    _legacy_file(evil, pickle.dumps({"w": _RunsShell(marker)}, protocol=2))
    with pytest.raises(BackboneError, match="forbidden global"):
        read_pth(evil)
    assert not marker.exists()


def test_rejects_code_in_the_header(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil_header.pth"
    _legacy_file(evil, pickle.dumps({}, protocol=2), header=(_RunsShell(marker),))
    with pytest.raises(BackboneError, match="forbidden global"):
        read_pth(evil)
    assert not marker.exists()


def test_rejects_a_state_dict_of_non_tensors(tmp_path):
    odd = tmp_path / "odd.pth"
    _legacy_file(odd, pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    with pytest.raises(BackboneError, match="not named tensors"):
        read_pth(odd)


def test_rejects_truncated_file(tmp_path, lite0_path):
    data = open(lite0_path, "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackboneError, match="truncated"):
        read_pth(cut)


@pytest.mark.parametrize(
    "content, reason",
    [(b"PK\x03\x04" + b"\0" * 64, "zip-format"), (pickle.dumps(12345), "magic"), (b"", "legacy PyTorch")],
    ids=["zip", "wrong-magic", "empty"],
)
def test_rejects_files_that_are_not_legacy_torch(tmp_path, content, reason):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(BackboneError, match=reason):
        read_pth(path)


def test_missing_file(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        read_pth(tmp_path / "nope.pth")
