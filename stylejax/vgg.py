"""VGG-16/19 convolutional features in Flax NNX, with weights from a file the user supplies.

VGG is the classic perceptual network for style transfer. We ship no VGG weights (licence and
size), so `load_vgg` reads what the user already has: a torchvision state dict (`.pth`/`.pt`)
or a Keras applications weight file (`.h5`). The two were trained on differently prepared
images, so the module does its own input normalisation and remembers which one its weights need.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .errors import WeightsError
from .torch_weights import load_torch_file

# Convs per stage; every stage ends in a 2×2 max-pool.
STAGE_CONVS: dict[int, tuple[int, ...]] = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # Keras 'caffe' mode, 0–255 scale
PREPROCESS_MODES = ("torch", "caffe")


def layer_names(depth: int) -> list[str]:
    """Tap names in network order: relu1_1, relu1_2, pool1, relu2_1, …, pool5."""
    names = []
    for stage, convs in enumerate(STAGE_CONVS[depth], start=1):
        names += [f"relu{stage}_{c}" for c in range(1, convs + 1)] + [f"pool{stage}"]
    return names


def _conv_specs(depth: int) -> list[tuple[str, int, int]]:
    """(name, in_channels, out_channels) for each conv, in order."""
    specs, cin = [], 3
    for stage, (convs, cout) in enumerate(zip(STAGE_CONVS[depth], STAGE_CHANNELS, strict=True), 1):
        for c in range(1, convs + 1):
            specs.append((f"relu{stage}_{c}", cin, cout))
            cin = cout
    return specs


def _torchvision_conv_indices(depth: int) -> list[int]:
    """Positions of the convs in torchvision's `vgg{depth}().features` Sequential."""
    indices, i = [], 0
    for convs in STAGE_CONVS[depth]:
        for _ in range(convs):
            indices.append(i)
            i += 2  # Conv2d, ReLU
        i += 1  # MaxPool2d
    return indices


def _max_pool(x: jax.Array) -> jax.Array:
    """2×2 stride-2 max-pool; odd sizes are floored as in torch and Keras."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


class VGG(nnx.Module):
    """The convolutional part of VGG-16/19 (no classifier) for NHWC images in [0, 1]."""

    def __init__(self, depth: int = 19, preprocess: str = "torch", *, rngs: nnx.Rngs):
        if depth not in STAGE_CONVS:
            raise ValueError(f"VGG depth must be 16 or 19, got {depth}")
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess must be 'torch' or 'caffe', got {preprocess!r}")
        self.depth = depth
        self.preprocess = preprocess
        self.names = tuple(name for name, _, _ in _conv_specs(depth))
        self.convs = nnx.List(
            [nnx.Conv(ci, co, (3, 3), padding=1, rngs=rngs) for _, ci, co in _conv_specs(depth)]
        )

    def normalise(self, x: jax.Array) -> jax.Array:
        """[0,1] RGB → the input the weights were trained on (ImageNet mean/std or caffe BGR)."""
        if self.preprocess == "caffe":
            return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)
        return (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)

    def __call__(self, x: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        """Activations at `taps` (relu{s}_{c}, pool{s}); layers past the deepest tap never run."""
        if isinstance(taps, str):
            taps = (taps,)
        order = layer_names(self.depth)
        unknown = [t for t in taps if t not in order]
        if unknown:
            raise ValueError(
                f"Unknown VGG-{self.depth} tap(s) {unknown}; "
                f"use relu1_1..{order[-2]} or pool1..pool5"
            )
        if not taps:
            return {}
        last = max(order.index(t) for t in taps)
        wanted = set(taps)
        out: dict[str, jax.Array] = {}
        h = self.normalise(x)
        convs = iter(self.convs)
        for name in order[: last + 1]:
            h = _max_pool(h) if name.startswith("pool") else jax.nn.relu(next(convs)(h))
            if name in wanted:
                out[name] = h
        return out


# ---------------------------------------------------------------------------------------------
# Weights

_TORCH_SUFFIXES = (".pth", ".pt")
_KERAS_SUFFIXES = (".h5", ".hdf5")


def _torch_kernels(path: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[int]]:
    """(kernel, bias) pairs from a torchvision state dict, kernels as (kh, kw, I, O)."""
    sd = {k.removeprefix("module."): v for k, v in load_torch_file(path).items()}
    if any(k.startswith("features.") and k.endswith("running_var") for k in sd):
        raise WeightsError("Batch-norm VGG weights (vgg16_bn/vgg19_bn) are not supported.")
    indices = sorted(
        int(k.split(".")[1])
        for k, v in sd.items()
        if k.startswith("features.") and k.endswith(".weight") and k.split(".")[1].isdigit()
        and v.ndim == 4
    )
    pairs = []
    for i in indices:
        bias = sd.get(f"features.{i}.bias")
        if bias is None:
            raise WeightsError(f"VGG weights have no bias for features.{i}.")
        pairs.append((np.transpose(sd[f"features.{i}.weight"], (2, 3, 1, 0)), bias))
    return pairs, indices


def _find(group, markers: tuple[str, ...]) -> np.ndarray | None:
    """The one dataset under `group` whose own name contains a marker (e.g. 'kernel', '_W')."""
    import h5py

    found: list[np.ndarray] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Dataset) and any(m in name.rsplit("/", 1)[-1] for m in markers):
            found.append(obj[()])

    group.visititems(visit)
    return found[0] if len(found) == 1 else None


def _keras_kernels(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) pairs from a Keras VGG weight file, in layer order."""
    try:
        import h5py
    except ImportError:
        raise WeightsError("Reading Keras .h5 weights needs h5py (pip install h5py).") from None
    try:
        with h5py.File(path, "r") as f:
            root = f.get("model_weights", f)  # whole-model files nest the weights here
            stored = root.attrs.get("layer_names")
            names = list(root.keys()) if stored is None else [
                n.decode() if isinstance(n, bytes) else str(n) for n in stored
            ]
            pairs = []
            for name in names:
                group = root.get(name)
                if group is None or not isinstance(group, h5py.Group):
                    continue
                kernel = _find(group, ("kernel", "_W"))
                if kernel is None or kernel.ndim != 4:
                    continue  # input, pooling or other weightless layer
                bias = _find(group, ("bias", "_b"))
                if bias is None:
                    raise WeightsError(f"Keras weights have no bias for layer {name}.")
                pairs.append((kernel, bias))
            return pairs
    except WeightsError:
        raise
    except Exception as err:  # not HDF5, truncated, unexpected structure
        raise WeightsError(
            f"Weights file {path.name} is not a readable HDF5 file ({type(err).__name__})."
        ) from None


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


def load_vgg(path: str | Path, depth: int | None = None, preprocess: str | None = None) -> VGG:
    """VGG from torchvision `.pth`/`.pt` or Keras `.h5` weights; depth inferred if not given.

    `preprocess` defaults to the format's usual one ("torch" for .pth, "caffe" for .h5); pass
    "caffe" for torch ports of the original Caffe VGG (BGR, 0–255 inputs).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _TORCH_SUFFIXES + _KERAS_SUFFIXES:
        raise WeightsError(
            f"Unsupported VGG weights file type '{suffix or path.name}'; "
            "use a torchvision .pth/.pt or a Keras .h5 file."
        )
    if not path.is_file():
        raise WeightsError(f"VGG weights file {path.name} not found.")

    indices = None
    if suffix in _TORCH_SUFFIXES:
        pairs, indices = _torch_kernels(path)
    else:
        pairs = _keras_kernels(path)
    by_count = {sum(c): d for d, c in STAGE_CONVS.items()}
    if depth is None:
        if len(pairs) not in by_count:
            raise WeightsError(
                "VGG weights should have 13 (VGG-16) or 16 (VGG-19) conv layers, "
                f"found {len(pairs)}."
            )
        depth = by_count[len(pairs)]
    elif depth not in STAGE_CONVS:
        raise WeightsError(f"VGG depth must be 16 or 19, got {depth}.")
    elif len(pairs) != sum(STAGE_CONVS[depth]):
        raise WeightsError(
            f"VGG-{depth} has {sum(STAGE_CONVS[depth])} conv layers, the weights have {len(pairs)}."
        )
    if indices is not None and indices != _torchvision_conv_indices(depth):
        raise WeightsError(f"Weights do not follow torchvision's vgg{depth} layer layout.")

    default = "torch" if suffix in _TORCH_SUFFIXES else "caffe"
    model = VGG(depth, preprocess or default, rngs=nnx.Rngs(0))
    for conv, name, (kernel, bias) in zip(model.convs, model.names, pairs, strict=True):
        expected = conv.kernel.shape
        if kernel.shape != expected or bias.shape != expected[-1:]:
            raise WeightsError(
                f"VGG weights: expected {_shape(expected)} for {name}, got {_shape(kernel.shape)}"
                + (f" with bias {_shape(bias.shape)}." if bias.shape != expected[-1:] else ".")
            )
        conv.kernel.set_value(jnp.asarray(kernel, jnp.float32))
        conv.bias.set_value(jnp.asarray(bias, jnp.float32))
    return model
