"""Export the any-style model's encoder to ONNX: a style picture → its style vector on ORT.

The generator half of the any-style model is already served by `stylejax.onnx_export` (through
`as_generator`); this is the other half. The graph is written with `onnx.helper` straight from
the NNX parameters (no torch, no tracing) and mirrors, op for op:

* `EfficientNetLite.features`: the (x·255 − 127)/128 normalisation, the stem and the MBConv
  blocks up to the deepest tap (folded convolutions; depthwise ones as grouped Conv with
  group = channels; ReLU6 as Clip(0, 6); the residual adds). Padding is flax's "SAME": a
  stride-1 k×k convolution pads (k−1)/2 on every side; a stride-2 one pads
  max((⌈n/2⌉−1)·2 + k − n, 0) in total, the odd pixel at the end, which is ONNX's
  auto_pad=SAME_UPPER and stays right for any H, W.
* `style_statistics`: per tap, each channel's mean and std = √(var + STATS_EPS) over H, W,
  concatenated [mean, std] tap after tap in `config.taps` order.
* `StyleEncoder`: LayerNormalization (opset 17) → Linear → Relu → Linear.

The graph takes NHWC (N, H, W, 3) in [0, 1] with dynamic N, H, W and returns `z` (N, style_dim)
and, for tests and debugging, `stats` (N, stats_dim). `tests/test_onnx_encoder.py` proves both
equal the JAX model's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .anystyle import STATS_EPS, AnyStyleModel
from .features import EfficientNetLite, FoldedConv
from .onnx_export import _GraphBuilder, _np

OPSET = 17  # LayerNormalization


class _EncoderExporter:
    """Walks the feature net and the encoder in call order, emitting the NCHW graph."""

    def __init__(self, model: AnyStyleModel, feature_net: EfficientNetLite, opset: int):
        if opset < 17:
            raise ValueError("the encoder graph needs opset 17 or later (LayerNormalization)")
        self.model, self.net = model, feature_net
        self.g = _GraphBuilder(opset)

    def conv(self, x: str, layer: FoldedConv) -> str:
        g = self.g
        conv = layer.conv
        kernel = _np(conv.kernel)  # (kh, kw, cin/groups, cout) → ONNX (cout, cin/groups, kh, kw)
        k = int(kernel.shape[0])
        stride = int(conv.strides[0] if isinstance(conv.strides, tuple | list) else conv.strides)
        groups = int(conv.feature_group_count)
        attrs: dict = {"kernel_shape": [k, k], "strides": [stride, stride], "group": groups}
        if stride == 1:
            attrs["pads"] = [(k - 1) // 2] * 4
        else:
            attrs["auto_pad"] = "SAME_UPPER"
        w = g.const("W", kernel.transpose(3, 2, 0, 1))
        b = g.const("B", _np(conv.bias))
        return g.op("Conv", [x, w, b], **attrs)

    def relu6(self, x: str) -> str:
        return self.g.op("Clip", [x, self.lo, self.hi])

    def tap_values(self, image: str) -> dict[str, str]:
        """The graph names of every tap's activation (NCHW), as `features` computes them."""
        g, net = self.g, self.net
        taps = self.model.config.taps
        wanted = {name: net.resolve_tap(name) for name in taps}
        last = max(pos for pos, _ in wanted.values())
        out: dict[str, str] = {}

        def keep(block: int, values: tuple[str, ...]) -> None:
            for name, (pos, place) in wanted.items():
                if pos == block:
                    out[name] = values[place] if len(values) > 1 else values[0]

        x = g.op("Transpose", [image], perm=[0, 3, 1, 2])
        x = g.op("Mul", [x, g.const("c255", np.array(255.0, np.float32))])
        x = g.op("Sub", [x, g.const("c127", np.array(127.0, np.float32))])
        x = g.op("Div", [x, g.const("c128", np.array(128.0, np.float32))])
        h = self.relu6(self.conv(x, net.stem))
        keep(-1, (h,))
        for i, block in enumerate(net.blocks):
            if i > last:
                break
            e = self.relu6(self.conv(h, block.expand)) if block.expand is not None else h
            d = self.relu6(self.conv(e, block.depthwise))
            p = self.conv(d, block.project)
            h = g.op("Add", [h, p]) if block.skip else p
            keep(i, (e, d, h))
        if last == net.num_blocks:
            h = self.relu6(self.conv(h, net.head))
            keep(net.num_blocks, (h,))
        return out

    def statistics(self, feats: dict[str, str]) -> str:
        """(N, stats_dim): [mean, std] per tap in `config.taps` order, as `style_statistics`."""
        g = self.g
        eps = g.const("stats_eps", np.array(STATS_EPS, np.float32))
        parts = []
        for tap in self.model.config.taps:
            f = feats[tap]
            mean = g.reduce_mean_hw(f)  # (N, C, 1, 1)
            centred = g.op("Sub", [f, mean])
            var = g.reduce_mean_hw(g.op("Mul", [centred, centred]))
            std = g.op("Sqrt", [g.op("Add", [var, eps])])
            parts += [g.op("Flatten", [mean], axis=1), g.op("Flatten", [std], axis=1)]
        return g.op("Concat", parts, output="stats", axis=1)

    def linear(self, x: str, layer) -> str:
        g = self.g
        y = g.op("MatMul", [x, g.const("kernel", _np(layer.kernel))])
        return g.op("Add", [y, g.const("bias", _np(layer.bias))]) if layer.bias is not None else y

    def build(self) -> onnx.ModelProto:
        g, enc = self.g, self.model.encoder
        self.lo = g.const("relu6_lo", np.array(0.0, np.float32))
        self.hi = g.const("relu6_hi", np.array(6.0, np.float32))
        stats = self.statistics(self.tap_values("style"))
        norm = enc.norm
        dim = self.model.stats_dim
        scale = _np(norm.scale) if norm.scale is not None else np.ones(dim, np.float32)
        bias = _np(norm.bias) if norm.bias is not None else np.zeros(dim, np.float32)
        x = g.op("LayerNormalization", [stats, g.const("ln_scale", scale),
                                        g.const("ln_bias", bias)],
                 axis=-1, epsilon=float(norm.epsilon))
        x = g.op("Relu", [self.linear(x, enc.fc1)])
        y = self.linear(x, enc.fc2)
        g.op("Identity", [y], output="z")

        style_dim = self.model.config.style_dim
        inputs = [helper.make_tensor_value_info("style", TensorProto.FLOAT, ["N", "H", "W", 3])]
        outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", style_dim]),
                   helper.make_tensor_value_info("stats", TensorProto.FLOAT, ["N", dim])]
        graph = helper.make_graph(g.nodes, "stylejax_style_encoder", inputs, outputs,
                                  initializer=g.inits)
        opset_id = helper.make_opsetid("", g.opset)
        model = helper.make_model(graph, opset_imports=[opset_id], producer_name="stylejax",
                                  ir_version=helper.find_min_ir_version_for([opset_id]))
        model.doc_string = (f"StyleJAX any-style encoder: taps {list(self.model.config.taps)}, "
                            f"stats {dim}, hidden {self.model.config.hidden}, z {style_dim}")
        return model


def build_encoder_onnx(model: AnyStyleModel, feature_net: EfficientNetLite,
                       *, opset: int = OPSET) -> onnx.ModelProto:
    """The encoder graph (checked): input `style` (N,H,W,3) float32 in [0,1]; outputs `z`
    (N, style_dim), equal to `model.encode(feature_net, style)`, and `stats` (N, stats_dim),
    equal to `style_statistics` of the feature net's taps."""
    onnx_model = _EncoderExporter(model, feature_net, opset).build()
    onnx.checker.check_model(onnx_model)
    return onnx_model


def export_encoder(model: AnyStyleModel, feature_net: EfficientNetLite, path: str | Path,
                   *, opset: int = OPSET) -> Path:
    """Write the encoder graph to `path` (.onnx) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_encoder_onnx(model, feature_net, opset=opset), str(out))
    return out


def _session(model: bytes, threads: int | None):
    """onnx_export's session settings, except that the worker threads do not spin-wait after a
    run: the encoder is followed at once by the generator's session, whose threads the spinning
    ones would compete with for the same cores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxStyleEncoder:
    """`model.encode(feature_net, ·)` on ONNX Runtime (CPU); numpy in, numpy out."""

    def __init__(self, model: AnyStyleModel, feature_net: EfficientNetLite,
                 threads: int | None = None, *, opset: int = OPSET):
        self.style_dim = model.config.style_dim
        self.stats_dim = model.stats_dim
        self.taps = tuple(model.config.taps)
        self.model_bytes = build_encoder_onnx(model, feature_net, opset=opset).SerializeToString()
        self.session = _session(self.model_bytes, threads)

    @staticmethod
    def _check(style: np.ndarray) -> np.ndarray:
        style = np.ascontiguousarray(style, dtype=np.float32)
        if style.ndim != 4 or style.shape[-1] != 3:
            raise ValueError(f"style must be (N,H,W,3) in [0,1], got {style.shape}")
        return style

    def __call__(self, style: np.ndarray) -> np.ndarray:
        """Style vectors (N, style_dim) of style pictures (N, H, W, 3) float32 in [0, 1]."""
        return self.session.run(["z"], {"style": self._check(style)})[0]

    def vector_and_statistics(self, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs of one run: what a photo-aware model caches of a style picture."""
        z, stats = self.session.run(["z", "stats"], {"style": self._check(style)})
        return z, stats

    def statistics(self, style: np.ndarray) -> np.ndarray:
        """The feature statistics (N, stats_dim) the MLP reads: `style_statistics`'s layout."""
        return self.session.run(["stats"], {"style": self._check(style)})[0]
