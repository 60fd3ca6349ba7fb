"""VGG port: activations match a torch forward of the same weights, for torch and Keras files."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from torch import nn

from stylejax.errors import WeightsError
from stylejax.vgg import VGG, load_vgg

# torchvision's `cfgs` for vgg16 ("D") and vgg19 ("E"), written out independently of stylejax.
CFG = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
TAPS = ["relu1_2", "relu3_1", "relu5_1"]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def torch_features(depth: int, seed: int = 0) -> tuple[nn.Sequential, dict[str, int]]:
    """torchvision's `vgg{depth}().features` layout with random weights, and tap → index."""
    torch.manual_seed(seed)
    layers, taps, cin, stage, conv = [], {}, 3, 1, 0
    for v in CFG[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            taps[f"pool{stage}"] = len(layers) - 1
            stage, conv = stage + 1, 0
            continue
        c = nn.Conv2d(cin, v, kernel_size=3, padding=1)
        nn.init.kaiming_normal_(c.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(c.bias, std=0.1)
        conv += 1
        layers += [c, nn.ReLU(inplace=True)]
        taps[f"relu{stage}_{conv}"] = len(layers) - 1
        cin = v
    return nn.Sequential(*layers).eval(), taps


def torchvision_state_dict(seq: nn.Sequential) -> dict[str, torch.Tensor]:
    sd = {f"features.{k}": v for k, v in seq.state_dict().items()}
    sd["classifier.0.weight"] = torch.randn(8, 16)  # real files have a classifier; it is ignored
    sd["classifier.0.bias"] = torch.zeros(8)
    return sd


def sample_image() -> tuple[torch.Tensor, jax.Array]:
    """The same 64×64 image as NCHW torch and NHWC JAX."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return x, jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def assert_matches(model: VGG, seq: nn.Sequential, tap_index: dict[str, int],
                   x_torch: torch.Tensor, x_jax: jax.Array) -> None:
    with jax.default_matmul_precision("float32"):
        ours = model(x_jax, TAPS)
    assert set(ours) == set(TAPS)
    with torch.no_grad():
        for tap in TAPS:
            ref = seq[: tap_index[tap] + 1](x_torch).permute(0, 2, 3, 1).numpy()
            scale = float(np.abs(ref).max())
            assert scale > 0
            np.testing.assert_allclose(np.asarray(ours[tap]), ref, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=tap)


@pytest.mark.parametrize("depth, legacy", [(16, False), (19, True)])
def test_torchvision_weights_match_torch(tmp_path, depth, legacy):
    seq, tap_index = torch_features(depth)
    path = tmp_path / f"vgg{depth}.pth"
    torch.save(torchvision_state_dict(seq), path, _use_new_zipfile_serialization=not legacy)
    model = load_vgg(path)
    assert (model.depth, model.preprocess) == (depth, "torch")

    x_torch, x_jax = sample_image()
    assert_matches(model, seq, tap_index, (x_torch - IMAGENET_MEAN) / IMAGENET_STD, x_jax)


def write_keras_h5(path, seq: nn.Sequential, layout: str) -> None:
    """The Keras applications notop layout ('classic') or Keras 2 `save_weights` ('tf2')."""
    names, convs, block, c = ["input_1"], [], 1, 0
    for m in seq:
        if isinstance(m, nn.Conv2d):
            c += 1
            names.append(f"block{block}_conv{c}")
            convs.append(m)
        elif isinstance(m, nn.MaxPool2d):
            names.append(f"block{block}_pool")
            block, c = block + 1, 0
    it = iter(convs)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.5"
        for name in names:
            g = f.create_group(name)
            if "_conv" not in name:
                g.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            conv = next(it)
            if layout == "classic":
                wn = [f"{name}_W_1:0", f"{name}_b_1:0"]
            else:
                wn = [f"{name}/kernel:0", f"{name}/bias:0"]
            g.attrs["weight_names"] = np.array([w.encode() for w in wn])
            g.create_dataset(wn[0], data=conv.weight.detach().numpy().transpose(2, 3, 1, 0))
            g.create_dataset(wn[1], data=conv.bias.detach().numpy())


@pytest.mark.parametrize("depth, layout", [(16, "classic"), (19, "tf2")])
def test_keras_weights_match_reference(tmp_path, depth, layout):
    seq, tap_index = torch_features(depth, seed=depth)
    path = tmp_path / f"vgg{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    write_keras_h5(path, seq, layout)
    model = load_vgg(path)
    assert (model.depth, model.preprocess) == (depth, "caffe")

    x_torch, x_jax = sample_image()
    caffe = x_torch.flip(1) * 255.0 - CAFFE_MEAN_BGR  # RGB→BGR, 0–255, minus the BGR mean
    assert_matches(model, seq, tap_index, caffe, x_jax)


@pytest.fixture(scope="module")
def vgg16_sd():
    return torchvision_state_dict(torch_features(16)[0])


def test_depth_is_checked(tmp_path, vgg16_sd):
    path = tmp_path / "vgg.pth"
    torch.save(vgg16_sd, path)
    with pytest.raises(WeightsError, match="VGG-19 has 16 conv layers, the weights have 13"):
        load_vgg(path, depth=19)

    short = {k: v for k, v in vgg16_sd.items() if not k.startswith("features.28.")}
    torch.save(short, path)
    with pytest.raises(WeightsError, match=r"13 \(VGG-16\) or 16 \(VGG-19\) conv layers, found 12"):
        load_vgg(path)


def test_shape_mismatch_names_the_layer(tmp_path, vgg16_sd):
    bad = dict(vgg16_sd)
    bad["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "vgg.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError, match="expected 3×3×64×128 for relu2_1, got 3×3×32×128"):
        load_vgg(path)


def test_damaged_and_unknown_files(tmp_path, vgg16_sd):
    good = tmp_path / "good.pth"
    torch.save(vgg16_sd, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: 100_000])
    garbage_pth = tmp_path / "garbage.pth"
    garbage_pth.write_bytes(b"this is not a checkpoint" * 10)
    garbage_h5 = tmp_path / "garbage.h5"
    garbage_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)

    for path in (truncated, garbage_pth):
        with pytest.raises(WeightsError):
            load_vgg(path)
    with pytest.raises(WeightsError, match="not a readable HDF5 file"):
        load_vgg(garbage_h5)
    with pytest.raises(WeightsError, match=r"file type '\.npz'.*\.pth/\.pt.*\.h5"):
        load_vgg(tmp_path / "vgg.npz")
    with pytest.raises(WeightsError, match="missing.pth not found"):
        load_vgg(tmp_path / "missing.pth")
    # Messages name the file, never the directory it sits in.
    with pytest.raises(WeightsError) as err:
        load_vgg(truncated)
    assert str(tmp_path) not in str(err.value)


def test_batchnorm_weights_are_refused(tmp_path, vgg16_sd):
    bn = dict(vgg16_sd, **{"features.1.running_var": torch.ones(64)})
    path = tmp_path / "vgg16_bn.pth"
    torch.save(bn, path)
    with pytest.raises(WeightsError, match="Batch-norm"):
        load_vgg(path)


def test_taps_and_early_stop():
    model = VGG(16, rngs=nnx.Rngs(0))
    x = jnp.full((1, 16, 16, 3), 0.5)
    with pytest.raises(ValueError, match="relu5_4"):
        model(x, ["relu5_4"])  # VGG-16 has three convs in stage 5
    with pytest.raises(ValueError, match="Unknown"):
        model(x, ["conv1_1"])
    out = model(x, ["pool2", "relu1_1"])
    assert {k: v.shape for k, v in out.items()} == {"relu1_1": (1, 16, 16, 64),
                                                   "pool2": (1, 4, 4, 128)}
    # Layers past the deepest tap are never run: poisoning them changes nothing.
    conv = model.convs[4]
    conv.kernel.set_value(jnp.full(conv.kernel.shape, jnp.nan))
    assert bool(jnp.isfinite(model(x, ["pool2"])["pool2"]).all())
    assert not bool(jnp.isfinite(model(x, ["relu3_1"])["relu3_1"]).all())
