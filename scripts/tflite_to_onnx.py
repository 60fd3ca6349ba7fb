"""Convert MediaPipe's small vision .tflite models to ONNX, once, at build time.

Why: the models we use for stylejax/regions.py (selfie segmentation, BlazeFace short-range face
detection) ship inside the mediapipe wheel (0.10.x, Apache-2.0), but that wheel pins protobuf<5
and opencv-contrib-python, which clash with the serving stack, and the segmentation model uses
MediaPipe's own custom op ``Convolution2DTransposeBias`` that neither TFLite's Python runtime
(ai-edge-litert) nor tflite2onnx knows. The graphs use only about fifteen simple ops, so this
script maps them to ONNX by hand and we run them with the ONNX Runtime we already serve with.

Build-time only (the product never imports it). Needs the ``tflite`` package (flatbuffers
schema, pure Python) and a downloaded mediapipe wheel::

    pip download "mediapipe==0.10.14" --no-deps -d /tmp/mp
    unzip -q /tmp/mp/mediapipe-*.whl 'mediapipe/modules/*' -d /tmp/mp
    pip install --target /tmp/tflitepkg --no-deps "tflite>=2.18"
    PYTHONPATH=/tmp/tflitepkg python scripts/tflite_to_onnx.py \\
        /tmp/mp/mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite \\
        stylejax/assets/regions/selfie_segmentation.onnx

Layout: TFLite is NHWC, ONNX's Conv is NCHW. Every 4-D tensor is kept NCHW inside the ONNX
graph; the input is transposed once at the top, and a 4-D tensor is transposed back to NHWC
only where an op depends on the memory order (RESHAPE) or where it leaves the graph.
"""

from __future__ import annotations

import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# TFLite enums (schema.fbs)
_F32, _F16, _I32 = 0, 1, 2
_SAME, _VALID = 0, 1
_ACT_NONE, _ACT_RELU, _ACT_RELU6 = 0, 1, 3
_TO_NCHW = [0, 3, 1, 2]
_TO_NHWC = [0, 2, 3, 1]


def _opname(model, op) -> str:
    import tflite

    oc = model.OperatorCodes(op.OpcodeIndex())
    code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
    if code == tflite.BuiltinOperator.CUSTOM:
        return "CUSTOM:" + oc.CustomCode().decode()
    return tflite.opcode2name(code)


class _Converter:
    def __init__(self, buf: bytes):
        import tflite

        self.tfl = tflite
        self.model = tflite.Model.GetRootAsModel(buf, 0)
        self.g = self.model.Subgraphs(0)
        self.nodes: list = []
        self.inits: dict[str, np.ndarray] = {}
        self.names: dict[int, str] = {}  # tensor index -> ONNX value name
        self.counter = 0

    # -- helpers ---------------------------------------------------------------------------
    def tensor(self, i):
        return self.g.Tensors(i)

    def shape(self, i) -> list[int]:
        return [int(d) for d in self.tensor(i).ShapeAsNumpy()]

    def const(self, i) -> np.ndarray | None:
        t = self.tensor(i)
        b = self.model.Buffers(t.Buffer())
        if b is None or b.DataLength() == 0:
            return None
        raw = b.DataAsNumpy().tobytes()
        dtype = {_F32: np.float32, _F16: np.float16, _I32: np.int32}[t.Type()]
        return np.frombuffer(raw, dtype=dtype).reshape(self.shape(i)).copy()

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}_{self.counter}"

    def add_init(self, arr: np.ndarray, stem: str) -> str:
        name = self.fresh(stem)
        self.inits[name] = arr
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def value(self, i) -> str:
        """The ONNX name of tensor i (4-D tensors NCHW); constants become initializers."""
        if i in self.names:
            return self.names[i]
        arr = self.dequantized[i] if i in self.dequantized else self.const(i)
        if arr is None:
            raise KeyError(f"tensor {i} ({self.tensor(i).Name().decode()}) has no producer")
        arr = arr.astype(np.float32) if arr.dtype == np.float16 else arr
        if arr.ndim == 4:
            arr = arr.transpose(_TO_NCHW)
        elif arr.ndim == 1 and arr.dtype == np.float32:
            arr = arr.reshape(1, -1, 1, 1)  # per-channel operand of ADD/MUL on NCHW
        name = self.add_init(np.ascontiguousarray(arr), "c")
        self.names[i] = name
        return name

    def weight(self, i) -> np.ndarray:
        """A weight tensor: a constant, or the float16 constant behind a DEQUANTIZE."""
        arr = self.const(i)
        if arr is None:
            arr = self.dequantized[i]
        return arr.astype(np.float32)

    def act(self, name: str, fused: int, out: str) -> str:
        if fused == _ACT_NONE:
            return self.node("Identity", [name], out)
        if fused == _ACT_RELU:
            return self.node("Relu", [name], out)
        if fused == _ACT_RELU6:
            lo = self.add_init(np.array(0, np.float32), "lo")
            hi = self.add_init(np.array(6, np.float32), "hi")
            return self.node("Clip", [name, lo, hi], out)
        raise NotImplementedError(f"fused activation {fused}")

    @staticmethod
    def same_pads(in_hw, k_hw, s_hw, d_hw=(1, 1)) -> list[int]:
        pads_b, pads_e = [], []
        for n, k, s, d in zip(in_hw, k_hw, s_hw, d_hw):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            pads_b.append(total // 2)
            pads_e.append(total - total // 2)
        return pads_b + pads_e

    # -- conversion ------------------------------------------------------------------------
    def run(self) -> onnx.ModelProto:
        tfl, g = self.tfl, self.g
        self.dequantized: dict[int, np.ndarray] = {}
        inputs, outputs = [], []
        for j in range(g.InputsLength()):
            i = g.Inputs(j)
            shp = self.shape(i)
            name = self.tensor(i).Name().decode()
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shp))
            self.names[i] = self.node("Transpose", [name], perm=_TO_NCHW)

        for k in range(g.OperatorsLength()):
            op = g.Operators(k)
            kind = _opname(self.model, op)
            ins = [int(x) for x in op.InputsAsNumpy()]
            outs = [int(x) for x in op.OutputsAsNumpy()]
            out = self.fresh(self.tensor(outs[0]).Name().decode().replace("/", "_"))
            o = op.BuiltinOptions()

            if kind == "DEQUANTIZE":
                arr = self.const(ins[0]).astype(np.float32)
                self.dequantized[outs[0]] = arr
                self.names.pop(outs[0], None)
                continue
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                cls = tfl.Conv2DOptions if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions
                opt = cls()
                opt.Init(o.Bytes, o.Pos)
                w = self.weight(ins[1])  # CONV: OHWI; DEPTHWISE: 1HW(C*m)
                in_shape = self.shape(ins[0])
                if kind == "CONV_2D":
                    wk = w.transpose(0, 3, 1, 2)
                    group = 1
                else:
                    wk = w.transpose(3, 0, 1, 2)
                    group = in_shape[3]
                k_hw = wk.shape[2:]
                s_hw = (opt.StrideH(), opt.StrideW())
                d_hw = (opt.DilationHFactor(), opt.DilationWFactor())
                if opt.Padding() == _SAME:
                    pads = self.same_pads(in_shape[1:3], k_hw, s_hw, d_hw)
                else:
                    pads = [0, 0, 0, 0]
                args = [self.value(ins[0]), self.add_init(np.ascontiguousarray(wk), "w")]
                if len(ins) > 2 and ins[2] >= 0:
                    args.append(self.add_init(self.weight(ins[2]).reshape(-1), "b"))
                y = self.node(
                    "Conv", args, kernel_shape=list(k_hw), strides=list(s_hw),
                    dilations=list(d_hw), pads=pads, group=group,
                )
                self.names[outs[0]] = self.act(y, opt.FusedActivationFunction(), out)
            elif kind == "CUSTOM:Convolution2DTransposeBias":
                # MediaPipe's op: custom options are a raw TfLiteTransposeConvParams
                # {padding, stride_width, stride_height}; inputs input, weights OHWI, bias.
                padding, sw, sh = struct.unpack("<3i", bytes(op.CustomOptionsAsNumpy()[:12]))
                w = self.weight(ins[1])
                wk = np.ascontiguousarray(w.transpose(3, 0, 1, 2))  # (I, O, kH, kW)
                b = self.weight(ins[2]).reshape(-1)
                in_hw = self.shape(ins[0])[1:3]
                out_hw = self.shape(outs[0])[1:3]
                k_hw = wk.shape[2:]
                pb, pe = [], []
                for n, o_, kk, s in zip(in_hw, out_hw, k_hw, (sh, sw)):
                    total = (n - 1) * s + kk - o_
                    pb.append(total // 2)
                    pe.append(total - total // 2)
                self.names[outs[0]] = self.node(
                    "ConvTranspose",
                    [self.value(ins[0]), self.add_init(wk, "w"), self.add_init(b, "b")],
                    out, kernel_shape=list(k_hw), strides=[sh, sw], pads=pb + pe,
                )
                assert padding in (_SAME, _VALID)
            elif kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
                opt = tfl.Pool2DOptions()
                opt.Init(o.Bytes, o.Pos)
                k_hw = (opt.FilterHeight(), opt.FilterWidth())
                s_hw = (opt.StrideH(), opt.StrideW())
                in_shape = self.shape(ins[0])
                pads = (self.same_pads(in_shape[1:3], k_hw, s_hw)
                        if opt.Padding() == _SAME else [0, 0, 0, 0])
                onnx_op = "AveragePool" if kind == "AVERAGE_POOL_2D" else "MaxPool"
                y = self.node(onnx_op, [self.value(ins[0])], kernel_shape=list(k_hw),
                              strides=list(s_hw), pads=pads)
                self.names[outs[0]] = self.act(y, opt.FusedActivationFunction(), out)
            elif kind in ("ADD", "MUL"):
                cls = tfl.AddOptions if kind == "ADD" else tfl.MulOptions
                opt = cls()
                opt.Init(o.Bytes, o.Pos)
                y = self.node("Add" if kind == "ADD" else "Mul", [self.value(x) for x in ins])
                self.names[outs[0]] = self.act(y, opt.FusedActivationFunction(), out)
            elif kind == "RELU":
                self.names[outs[0]] = self.node("Relu", [self.value(ins[0])], out)
            elif kind == "HARD_SWISH":
                self.names[outs[0]] = self.node("HardSwish", [self.value(ins[0])], out)
            elif kind == "LOGISTIC":
                self.names[outs[0]] = self.node("Sigmoid", [self.value(ins[0])], out)
            elif kind == "RESIZE_BILINEAR":
                opt = tfl.ResizeBilinearOptions()
                opt.Init(o.Bytes, o.Pos)
                if opt.AlignCorners():
                    mode = "align_corners"
                elif opt.HalfPixelCenters():
                    mode = "half_pixel"
                else:
                    mode = "asymmetric"
                n, h, w, c = self.shape(outs[0])
                sizes = self.add_init(np.array([n, c, h, w], np.int64), "sizes")
                self.names[outs[0]] = self.node(
                    "Resize", [self.value(ins[0]), "", "", sizes], out, mode="linear",
                    coordinate_transformation_mode=mode,
                )
            elif kind == "PAD":
                p = self.const(ins[1]).astype(np.int64)  # [[b, e]] per NHWC axis
                p = p[_TO_NCHW] if len(p) == 4 else p
                pads = self.add_init(np.concatenate([p[:, 0], p[:, 1]]), "pads")
                self.names[outs[0]] = self.node("Pad", [self.value(ins[0]), pads], out)
            elif kind == "RESHAPE":
                x = self.value(ins[0])
                if len(self.shape(ins[0])) == 4:
                    x = self.node("Transpose", [x], perm=_TO_NHWC)
                new = np.array(self.shape(outs[0]), np.int64)
                y = self.node("Reshape", [x, self.add_init(new, "shape")])
                if len(new) == 4:
                    y = self.node("Transpose", [y], perm=_TO_NCHW)
                self.names[outs[0]] = self.node("Identity", [y], out)
            elif kind == "CONCATENATION":
                opt = tfl.ConcatenationOptions()
                opt.Init(o.Bytes, o.Pos)
                rank = len(self.shape(outs[0]))
                axis = opt.Axis() % rank
                if rank == 4:
                    axis = _TO_NCHW.index(axis)
                y = self.node("Concat", [self.value(x) for x in ins], axis=axis)
                self.names[outs[0]] = self.act(y, opt.FusedActivationFunction(), out)
            else:
                raise NotImplementedError(kind)

        for j in range(g.OutputsLength()):
            i = g.Outputs(j)
            shp = self.shape(i)
            name = self.tensor(i).Name().decode()
            perm = {"perm": _TO_NHWC} if len(shp) == 4 else {}
            self.node("Transpose" if perm else "Identity", [self.names[i]], name, **perm)
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shp))

        inits = [numpy_helper.from_array(v, k) for k, v in self.inits.items()]
        graph = helper.make_graph(self.nodes, "converted", inputs, outputs, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.producer_name = "stylejax scripts/tflite_to_onnx.py"
        onnx.checker.check_model(model)
        return model


def convert(src: str, dst: str) -> None:
    with open(src, "rb") as f:
        model = _Converter(f.read()).run()
    onnx.save(model, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: tflite_to_onnx.py MODEL.tflite OUT.onnx")
    convert(sys.argv[1], sys.argv[2])
