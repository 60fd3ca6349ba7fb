"""Export the generator's weights to ONNX and run them with ONNX Runtime (the CPU serving path).

XLA's CPU backend trails ONNX Runtime on this network (docs/benchmarks.md), so on CPU we run the
SAME weights through ORT; the JAX path stays for GPU/TPU. The graph is written with
`onnx.helper` straight from the NNX parameters (no torch, no tracing), mirroring
`stylejax.generator.Generator.__call__` op for op; `tests/test_onnx_export.py` proves equality.

Layout: the graph takes and returns NHWC like the JAX model, transposes once to NCHW (ORT's
native conv layout) and once back. Channel ordering of the pixel foldings matches without
permuting any weights: our NHWC `space_to_depth` puts channel (dy·r + dx)·C + c, which is exactly
ONNX SpaceToDepth's NCHW order, and our `depth_to_space` reads channels as (dy, dx, c), which is
ONNX DepthToSpace in DCR mode (CRD would need the weights permuted).

Not op for op at the full-res end: where the last decoder stage can be written as one low-res
conv per output phase (shuffle, nearest, bilinear-edge: `generator.phase_kernel`), that stage,
its norm and the conv to RGB run on the 2×2 phases at 1/2 res (`subpixel_kernel`), with the
same multiply-adds but no full-res resize, padding or DepthToSpace; ONNX Runtime ran those as
long as the convs (docs/benchmarks.md, 2026-12-03).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .generator import (
    BILINEAR_TAPS,
    IN_EPS,
    NEAREST_TAPS,
    SKIP_CLIP,
    CondInstanceNorm,
    Generator,
    ReflectConv,
    phase_kernel,
)

# The last decoder stage as one low-res conv per output phase, for the decoders where that is
# exactly the model's function (see `generator.phase_kernel`): the low-res taps it stands for.
PHASE_TAPS = {"nearest": NEAREST_TAPS, "bilinear-edge": BILINEAR_TAPS}

# A 3×3 conv on a depth-to-space'd tensor, along one axis: output phase p, tap k (offset k-1)
# reads input phase (p + k - 1) mod 2 at low-res offset floor((p + k - 1) / 2).
SUBPIXEL_TAPS = np.zeros((2, 3, 2, 3), np.float32)  # [out phase, low-res offset, in phase, tap]
for _p in range(2):
    for _k in range(3):
        _q, _t = divmod(_p + _k - 1, 2)[::-1]
        SUBPIXEL_TAPS[_p, _t + 1, _q, _k] = 1.0


def subpixel_kernel(kernel: np.ndarray) -> np.ndarray:
    """A 3×3 kernel (3, 3, Cin, Cout) meant for the full-res picture, as a 3×3 kernel
    (3, 3, 4·Cin, 4·Cout) on its 2×2 phases (depth-to-space order in and out). With the
    phases padded by repeating their edge, this is exactly reflection at full res: the
    reflected row -1 is row 1, phase 1 of low-res row 0, which is what the repeated row reads."""
    cin, cout = kernel.shape[2], kernel.shape[3]
    k = np.einsum("paqk,sbrl,klio->abqripso", SUBPIXEL_TAPS, SUBPIXEL_TAPS, kernel)
    return k.reshape(3, 3, 4 * cin, 4 * cout)

Stats = list[tuple[np.ndarray, np.ndarray]]


def _np(param) -> np.ndarray:
    return np.asarray(param[...], dtype=np.float32)


class _GraphBuilder:
    """Tiny helper: unique names, nodes, initialisers, constants."""

    def __init__(self, opset: int):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], base: str | None = None,
           output: str | None = None, **attrs) -> str:
        out = output or self.name(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.name(op_type), **attrs))
        return out

    def reduce_mean_hw(self, x: str) -> str:
        """Mean over H, W of NCHW, keeping dims (axes became an input in opset 18)."""
        if self.opset >= 18:
            axes = self.const("axes_hw", np.array([2, 3], np.int64))
            return self.op("ReduceMean", [x, axes], keepdims=1)
        return self.op("ReduceMean", [x], axes=[2, 3], keepdims=1)


class _Exporter:
    """Walks the generator in call order, emitting the NCHW graph."""

    def __init__(self, gen: Generator, external_stats: bool, opset: int):
        self.gen = gen
        self.external = external_stats
        self.g = _GraphBuilder(opset)
        self.norm_index = 0
        self.stat_ios: list[onnx.ValueInfoProto] = []
        self.unsq_axes = self.g.const("axes_c11", np.array([2, 3], np.int64))
        self.eps = self.g.const("eps", np.array(IN_EPS, np.float32))
        self.one = self.g.const("one", np.array(1.0, np.float32))

    def conv(self, x: str, layer: ReflectConv, kernel: np.ndarray | None = None,
             bias: np.ndarray | None = None, pad: str = "reflect") -> str:
        """Pad by one pixel, 3×3 conv; `kernel`, `bias` replace the layer's own."""
        g = self.g
        kernel = _np(layer.conv.kernel) if kernel is None else kernel
        bias = _np(layer.conv.bias) if bias is None else bias
        w = g.const("W", kernel.transpose(3, 2, 0, 1))  # (kh, kw, cin, cout) → (cout, cin, kh, kw)
        b = g.const("B", bias)
        pads = g.const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))
        padded = g.op("Pad", [x, pads], mode=pad)
        return g.op("Conv", [padded, w, b], kernel_shape=[3, 3], pads=[0, 0, 0, 0])

    def inv_std(self, var: str) -> str:
        g = self.g
        return g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, self.eps])])])

    def tile_phases(self, x: str, phases: int) -> str:
        """(N,C,1,1) → (N,phases·C,1,1), one copy per phase (depth-to-space channel order)."""
        if phases == 1:
            return x
        return self.g.op("Tile", [x, self.g.const("repeats", np.array([1, phases, 1, 1],
                                                                      np.int64))])

    def pool_phases(self, x: str, channels: int, phases: int) -> str:
        """Per-channel means (N,phases·C,1,1) of equal-sized phases → the picture's (N,C,1,1)."""
        if phases == 1:
            return x
        g = self.g
        split = g.op("Reshape", [x, g.const("shape", np.array([0, phases, channels, 1, 1],
                                                             np.int64))])
        if g.opset >= 18:
            return g.op("ReduceMean", [split, g.const("axes", np.array([1], np.int64))],
                        keepdims=0)
        return g.op("ReduceMean", [split], axes=[1], keepdims=0)

    def norm(self, x: str, layer: CondInstanceNorm, phases: int = 1) -> str:
        """Conditional instance norm: y = x·a + b with a = γ/√(var+ε), per sample and channel.

        `phases` = 4: x holds the layer's input as 2×2 phases (N,4C,H/2,W/2); the statistics
        are pooled over them, so they are the full-res picture's."""
        g = self.g
        i = self.norm_index
        self.norm_index += 1
        channels = int(layer.scale[...].shape[1])
        # γ, β: (N,S) @ (S,C) → (N,C) → (N,C,1,1)
        gamma = g.op("Unsqueeze", [g.op("MatMul", ["style_w", g.const("scale", _np(layer.scale))]),
                                   self.unsq_axes])
        beta = g.op("Unsqueeze", [g.op("MatMul", ["style_w", g.const("shift", _np(layer.shift))]),
                                  self.unsq_axes])
        stat_shape = ["N", 1, 1, channels]
        if self.external:
            # Own batch symbol: statistics of size 1 broadcast over a batch of tiles.
            mean_in, var_in = f"mean_{i}", f"var_{i}"
            self.stat_ios += [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                                            ["Nstats", 1, 1, channels])
                              for n in (mean_in, var_in)]
            mean = g.op("Transpose", [mean_in], perm=[0, 3, 1, 2])
            var = g.op("Transpose", [var_in], perm=[0, 3, 1, 2])
            a = g.op("Mul", [gamma, self.inv_std(var)])
            b = g.op("Sub", [beta, g.op("Mul", [mean, a])])
            a, b = self.tile_phases(a, phases), self.tile_phases(b, phases)
            return g.op("Add", [g.op("Mul", [x, a]), b])
        mean = self.pool_phases(g.reduce_mean_hw(x), channels, phases)
        centred = g.op("Sub", [x, self.tile_phases(mean, phases)])
        var = self.pool_phases(g.reduce_mean_hw(g.op("Mul", [centred, centred])), channels,
                               phases)
        g.op("Transpose", [mean], output=f"mean_{i}", perm=[0, 2, 3, 1])
        g.op("Transpose", [var], output=f"var_{i}", perm=[0, 2, 3, 1])
        self.stat_ios += [helper.make_tensor_value_info(n, TensorProto.FLOAT, stat_shape)
                          for n in (f"mean_{i}", f"var_{i}")]
        a = self.tile_phases(g.op("Mul", [gamma, self.inv_std(var)]), phases)
        return g.op("Add", [g.op("Mul", [centred, a]), self.tile_phases(beta, phases)])

    def norm_relu(self, x: str, layer: CondInstanceNorm, phases: int = 1) -> str:
        return self.g.op("Relu", [self.norm(x, layer, phases)])

    def up(self, x: str, layer: ReflectConv, photo: str | None = None) -> str:
        """One 2× decoder step, as `Generator._up` does it (`photo` joins as channels)."""
        g = self.g
        if self.phased and photo is None:
            cout = int(layer.conv.bias.shape[0])  # shuffle's conv already gives the 4 phases
            return self.depth_to_space(self.up_phases(x, layer),
                                       cout // 4 if self.gen.config.upsample == "shuffle"
                                       else cout)
        scales = g.const("scales", np.array([1.0, 1.0, 2.0, 2.0], np.float32))
        if self.gen.config.upsample == "bilinear":  # half-pixel centres, as upsample_bilinear
            up = g.op("Resize", [x, "", scales], mode="linear",
                      coordinate_transformation_mode="half_pixel")
        else:  # asymmetric + floor: output pixel i reads input i // 2, exactly jnp.repeat
            up = g.op("Resize", [x, "", scales], mode="nearest",
                      coordinate_transformation_mode="asymmetric", nearest_mode="floor")
        if photo is not None:
            up = g.op("Concat", [up, photo], axis=1)
        return self.conv(up, layer)

    @property
    def phased(self) -> bool:
        """Whether the decoder's steps can run as low-res convs per output phase (`up_phases`)."""
        return self.gen.config.upsample == "shuffle" or self.gen.config.upsample in PHASE_TAPS

    def depth_to_space(self, x: str, channels: int) -> str:
        """DepthToSpace (DCR) of (N, 4C, H, W), written as a stride-2 transposed conv with a
        0/1 kernel: the same values (each output sums exactly one input), and ONNX Runtime
        runs it in half the time of its DepthToSpace (docs/benchmarks.md, 2026-12-03)."""
        kernel = np.zeros((4 * channels, channels, 2, 2), np.float32)
        for dy in range(2):
            for dx in range(2):
                kernel[(dy * 2 + dx) * channels + np.arange(channels), np.arange(channels),
                       dy, dx] = 1.0
        return self.g.op("ConvTranspose", [x, self.g.const("d2s", kernel)], strides=[2, 2],
                         kernel_shape=[2, 2])

    def up_phases(self, x: str, layer: ReflectConv) -> str:
        """One 2× decoder step left as its 2×2 phases (N,4C,H,W): `up` without the
        depth-to-space, which ONNX Runtime runs as slowly as the conv before it."""
        mode = self.gen.config.upsample
        if mode == "shuffle":
            return self.conv(x, layer)
        kernel = phase_kernel(_np(layer.conv.kernel), PHASE_TAPS[mode], np)
        return self.conv(x, layer, kernel, np.tile(_np(layer.conv.bias), 4), pad="edge")

    def logit(self, x: str) -> str:
        """`generator.photo_logit`."""
        g, one = self.g, self.one
        clipped = g.op("Clip", [x, g.const("lo", np.array(SKIP_CLIP, np.float32)),
                                g.const("hi", np.array(1.0 - SKIP_CLIP, np.float32))])
        return g.op("Sub", [g.op("Log", [clipped]), g.op("Log", [g.op("Sub", [one, clipped])])])

    def phases_to_nhwc(self, y: str) -> str:
        """(N, 4·3, H/2, W/2) phases → the (N, H, W, 3) picture, shaped like the input photo."""
        g = self.g
        y = g.op("Transpose", [y], perm=[0, 2, 3, 1])  # (N, H/2, W/2, (dy, dx, c))
        y = g.op("Reshape", [y, g.const("shape", np.array([0, 0, 0, 2, 2, 3], np.int64))])
        y = g.op("Transpose", [y], perm=[0, 1, 3, 2, 4, 5])  # (N, H/2, dy, W/2, dx, c)
        return g.op("Reshape", [y, g.op("Shape", ["photo"])], output="styled")

    def build(self) -> onnx.ModelProto:
        """The generator's graph. For decoders whose last stage has phases (`up_phases`), that
        stage, its norm and the conv to RGB all run at 1/2 res on the 2×2 phases, and the
        logit skip reads the photo's phases: no full-res tensor but the output."""
        g, gen = self.g, self.gen
        full = g.op("Transpose", ["photo"], perm=[0, 3, 1, 2])
        photo = g.op("SpaceToDepth", [full], blocksize=2)  # (N, 12, H/2, W/2)
        folded = g.op("Sub", [g.op("Mul", [photo, g.const("two", np.array(2.0, np.float32))]),
                              self.one])
        h = self.norm_relu(self.conv(folded, gen.enc1), gen.norm_e1)
        h = self.norm_relu(self.conv(g.op("SpaceToDepth", [h], blocksize=2), gen.enc2), gen.norm_e2)
        for block in gen.res:
            r = self.norm_relu(self.conv(h, block.conv1), block.norm1)
            r = self.norm(self.conv(r, block.conv2), block.norm2)
            h = g.op("Add", [h, r])
        h = self.norm_relu(self.up(h, gen.dec1, folded if gen.config.photo_skip else None),
                           gen.norm_d1)
        if self.phased:
            h = self.norm_relu(self.up_phases(h, gen.dec2), gen.norm_d2, phases=4)
            out = self.conv(h, gen.out, subpixel_kernel(_np(gen.out.conv.kernel)),
                            np.tile(_np(gen.out.conv.bias), 4), pad="edge")
            self.phases_to_nhwc(g.op("Sigmoid", [g.op("Add", [out, self.logit(photo)])]))
        else:
            h = self.norm_relu(self.up(h, gen.dec2), gen.norm_d2)
            y = g.op("Sigmoid", [g.op("Add", [self.conv(h, gen.out), self.logit(full)])])
            g.op("Transpose", [y], output="styled", perm=[0, 2, 3, 1])

        num_styles = gen.config.num_styles
        inputs = [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["N", "H", "W", 3]),
                  helper.make_tensor_value_info("style_w", TensorProto.FLOAT, ["N", num_styles])]
        outputs = [helper.make_tensor_value_info("styled", TensorProto.FLOAT, ["N", "H", "W", 3])]
        if self.external:
            inputs += self.stat_ios
        else:
            outputs += self.stat_ios
        graph = helper.make_graph(g.nodes, "stylejax_generator", inputs, outputs,
                                  initializer=g.inits)
        opset_id = helper.make_opsetid("", g.opset)
        model = helper.make_model(graph, opset_imports=[opset_id], producer_name="stylejax",
                                  ir_version=helper.find_min_ir_version_for([opset_id]))
        model.doc_string = f"StyleJAX generator {gen.config.to_dict()}"
        return model


def export_generator_onnx(generator: Generator, *, external_stats: bool = False,
                          opset: int = 17) -> bytes:
    """Serialised ONNX model computing `generator(photo, style_w)` with the generator's weights.

    Inputs `photo` (N,H,W,3) float32 in [0,1] (H, W multiples of 4) and `style_w` (N,S); output
    `styled` (N,H,W,3). Without `external_stats` the per-norm statistics are extra outputs
    `mean_i`, `var_i` (N,1,1,C) in call order; with it they are inputs and replace the graph's
    own (tiles of a large photo sharing the whole photo's statistics).
    """
    model = _Exporter(generator, external_stats, opset).build()
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _session(model: bytes, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxGenerator:
    """`Generator` look-alike backed by ONNX Runtime on CPU; numpy in, numpy out.

    Holds two graphs, each turned into a session only when first needed: one that computes its
    own statistics (and returns them) and one that takes them as inputs.
    """

    def __init__(self, model: bytes, external_stats_model: bytes, num_norms: int,
                 *, threads: int | None = None):
        self._models = {False: model, True: external_stats_model}
        self._sessions: dict[bool, object] = {}
        self.num_norms = num_norms
        self.threads = threads

    @classmethod
    def from_generator(cls, generator: Generator, *, opset: int = 17,
                       threads: int | None = None) -> OnnxGenerator:
        return cls(export_generator_onnx(generator, opset=opset),
                   export_generator_onnx(generator, external_stats=True, opset=opset),
                   num_norms=len(generator.norm_layers()), threads=threads)

    def session(self, external_stats: bool = False):
        """The onnxruntime.InferenceSession for one of the two graphs (created on first use)."""
        if external_stats not in self._sessions:
            self._sessions[external_stats] = _session(self._models[external_stats], self.threads)
        return self._sessions[external_stats]

    def __call__(self, photo: np.ndarray, style_w: np.ndarray,
                 stats: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 return_stats: bool = False) -> np.ndarray | tuple[np.ndarray, Stats]:
        """Same contract as `Generator.__call__`, on numpy arrays."""
        photo = np.ascontiguousarray(photo, dtype=np.float32)
        style_w = np.ascontiguousarray(style_w, dtype=np.float32)
        if photo.ndim != 4 or photo.shape[-1] != 3 or photo.shape[1] % 4 or photo.shape[2] % 4:
            raise ValueError(f"photo must be (N,H,W,3) with H, W multiples of 4, got {photo.shape}")
        feeds = {"photo": photo, "style_w": style_w}
        if stats is None:
            outs = self.session(False).run(None, feeds)
            y = outs[0]
            collected = [(outs[1 + 2 * i], outs[2 + 2 * i]) for i in range(self.num_norms)]
        else:
            stats = list(stats)
            if len(stats) != self.num_norms:
                raise ValueError(f"expected {self.num_norms} (mean, var) pairs, got {len(stats)}")
            collected = [(np.ascontiguousarray(m, dtype=np.float32),
                          np.ascontiguousarray(v, dtype=np.float32)) for m, v in stats]
            for i, (m, v) in enumerate(collected):
                feeds[f"mean_{i}"], feeds[f"var_{i}"] = m, v
            y = self.session(True).run(["styled"], feeds)[0]
        return (y, collected) if return_stats else y
