"""The torch-free checkpoint reader: genuine torch files load exactly; hostile files run nothing."""

from __future__ import annotations

import io
import os
import pickle
import shlex
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from stylejax.errors import WeightsError
from stylejax.torch_weights import _LEGACY_MAGIC, load_torch_file

torch = pytest.importorskip("torch")

FORMATS = [pytest.param(True, id="zip"), pytest.param(False, id="legacy")]


def _state_dict() -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=g)
    return {
        "f32": torch.randn(4, 3, generator=g),
        "f16": torch.randn(2, 3, generator=g).half(),
        "i64": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
        "transposed": base.t(),              # non-contiguous view, strides (1, 5)
        "offset": base[1:, 2:],              # view with a storage offset
        "base": base,                        # shares its storage with the two views
        "scalar": torch.tensor(2.5),
        "f64": torch.randn(2, generator=g, dtype=torch.float64),
        "flags": torch.tensor([True, False, True]),
        "conv": torch.randn(4, 3, 2, 2, generator=g).permute(0, 2, 3, 1),  # 4-D permuted
    }


def _save(obj, path: Path, zip_format: bool) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("zip_format", FORMATS)
def test_state_dict_round_trip(tmp_path, zip_format):
    sd = _state_dict()
    path = _save(sd, tmp_path / "w.pt", zip_format)
    assert (path.read_bytes()[:4] == b"PK\x03\x04") == zip_format
    out = load_torch_file(path)
    assert list(out) == list(sd)
    for key, tensor in sd.items():
        ref = tensor.numpy()
        assert out[key].dtype == ref.dtype, key
        assert out[key].shape == ref.shape, key
        np.testing.assert_array_equal(out[key], ref, err_msg=key)
        assert out[key].flags.c_contiguous


@pytest.mark.parametrize("zip_format", FORMATS)
def test_module_state_dict_and_wrapped_checkpoint(tmp_path, zip_format):
    """A real module's state dict (OrderedDict with _metadata, BN's int64 counter), wrapped in
    {'state_dict': ..., 'epoch': ...} as training scripts save it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    model(torch.randn(2, 3, 8, 8))  # move the running stats away from their defaults
    sd = model.state_dict()
    path = _save({"state_dict": sd, "epoch": 7}, tmp_path / "ckpt.pth", zip_format)
    out = load_torch_file(path)
    assert set(out) == set(sd)
    for key, tensor in sd.items():
        np.testing.assert_array_equal(out[key], tensor.numpy(), err_msg=key)
    assert out["1.num_batches_tracked"].dtype == np.int64


# -- hostile and damaged files -------------------------------------------------------------------


class _System:
    """Pickles as a call of os.system(cmd)."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _touch(marker: Path) -> _System:
    return _System(f"touch {shlex.quote(str(marker))}")


def _zip_checkpoint(path: Path, pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
        for key, data in (storages or {}).items():
            z.writestr(f"archive/data/{key}", data)
    return path


def _legacy_checkpoint(path: Path, *pickles) -> Path:
    buf = io.BytesIO()
    for obj in pickles:
        pickle.dump(obj, buf, protocol=2)
    path.write_bytes(buf.getvalue())
    return path


def _check_refused(path: Path, marker: Path, needle: str = "") -> None:
    with pytest.raises(WeightsError) as err:
        load_torch_file(path)
    assert needle in str(err.value)
    assert not marker.exists(), "the pickled command ran"


def test_forbidden_global_in_zip_checkpoint(tmp_path):
    marker = tmp_path / "ran"
    path = _zip_checkpoint(tmp_path / "evil.pt", pickle.dumps({"w": _touch(marker)}, protocol=2))
    _check_refused(path, marker, "system")


def test_forbidden_global_in_legacy_state_dict(tmp_path):
    marker = tmp_path / "ran"
    path = _legacy_checkpoint(tmp_path / "evil.pth", _LEGACY_MAGIC, 1001,
                              {"little_endian": True}, {"w": _touch(marker)}, [])
    _check_refused(path, marker, "system")


def test_other_forbidden_globals(tmp_path):
    marker = tmp_path / "ran"
    for i, obj in enumerate([{"x": _System("true")}, {"x": Path("a")}, {"x": np.float64(1.0)},
                             {"x": {1, 2}.__class__}]):
        path = _zip_checkpoint(tmp_path / f"g{i}.pt", pickle.dumps(obj, protocol=2))
        _check_refused(path, marker)


def test_pickle_before_the_magic_number_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_touch(marker), protocol=2))
    try:
        _check_refused(path, marker)
    finally:
        marker.unlink(missing_ok=True)


def test_pickle_in_the_storage_key_list_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = _legacy_checkpoint(tmp_path / "evil.pth", _LEGACY_MAGIC, 1001,
                              {"little_endian": True}, {}, _touch(marker))
    try:
        with pytest.raises(WeightsError):
            load_torch_file(path)
    finally:
        ran = marker.exists()
        marker.unlink(missing_ok=True)
    assert not ran, "the pickled command ran"


class _StorageRef:
    pass


class _Tensor:
    def __init__(self, size, stride, offset=0):
        self.size, self.stride, self.offset = size, stride, offset

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_StorageRef(), self.offset, self.size, self.stride, False, OrderedDict()))


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", torch.FloatStorage, "0", "cpu", 4)
        return None


def _crafted(path: Path, tensor: _Tensor) -> Path:
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump({"w": tensor})
    return _zip_checkpoint(path, buf.getvalue(), {"0": np.arange(4, dtype=np.float32).tobytes()})


def test_crafted_tensor_within_its_storage_loads(tmp_path):
    out = load_torch_file(_crafted(tmp_path / "ok.pt", _Tensor((2, 2), (1, 2))))
    np.testing.assert_array_equal(out["w"], [[0, 2], [1, 3]])


def test_tensor_larger_than_its_storage_is_refused(tmp_path):
    with pytest.raises(WeightsError):
        load_torch_file(_crafted(tmp_path / "oob.pt", _Tensor((5,), (1,))))


@pytest.mark.parametrize("zip_format", FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, zip_format, keep):
    path = _save(_state_dict(), tmp_path / "w.pt", zip_format)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightsError) as err:
        load_torch_file(path)
    assert "w.pt" in str(err.value) or "truncated" in str(err.value)


def test_empty_missing_and_foreign_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(WeightsError):
        load_torch_file(tmp_path / "empty.pt")
    with pytest.raises(WeightsError, match="Cannot read"):
        load_torch_file(tmp_path / "missing.pt")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        load_torch_file(tmp_path / "other.zip")
    path = _legacy_checkpoint(tmp_path / "list.pth", _LEGACY_MAGIC, 1001, {}, [1, 2], [])
    with pytest.raises(WeightsError, match="state dict"):
        load_torch_file(path)
