"""The any-style model (stylejax/anystyle.py) and its training step (trainer/anystyle.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stylejax.anystyle import AnyStyleConfig, AnyStyleModel, blend_vectors, statistics_size
from stylejax.features import load_feature_net
from stylejax.generator import GeneratorConfig
from trainer.anystyle import AnyStyleTrainConfig, AnyStyleTrainer
from trainer.anystyle_data import StyleCorpus, augmented_style, colour_jitter, held_out_names

TINY = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                res_blocks=1, upsample="nearest"),
                      style_dim=8, hidden=16)


@pytest.fixture(scope="module")
def feature_net():
    return load_feature_net()


@pytest.fixture(scope="module")
def model(feature_net):
    return AnyStyleModel(TINY, statistics_size(feature_net, TINY.taps), rngs=nnx.Rngs(0))


def _pictures(seed: int, n: int, side: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).random((n, side, side, 3)), jnp.float32)


def test_encoder_gives_one_vector_per_picture_and_tells_pictures_apart(model, feature_net):
    pictures = jnp.concatenate([_pictures(1, 1, 64), jnp.full((1, 64, 64, 3), 0.5)])
    z = model.encode(feature_net, pictures)
    assert z.shape == (2, TINY.style_dim)
    assert float(jnp.linalg.norm(z[0] - z[1])) > 1e-3


def test_zero_vector_is_the_generators_own_style_and_vectors_change_it(model):
    photo = _pictures(2, 1, 32)
    zero = model(photo, jnp.zeros((1, TINY.style_dim)))
    # The zero vector adds nothing to the norms: the same as the generator's one table row.
    plain = model.generator(photo, jnp.ones((1, 1)))
    np.testing.assert_allclose(np.asarray(zero), np.asarray(plain), atol=1e-6)
    styled = model(photo, jnp.ones((1, TINY.style_dim)) * 5.0)
    assert float(jnp.mean(jnp.abs(styled - zero))) > 1e-4


def test_affines_follow_the_norm_layers(model):
    z = jnp.ones((3, TINY.style_dim))
    affines = model.affines(z)
    norms = model.generator.norm_layers()
    assert len(affines) == len(norms)
    for (scale, shift), norm in zip(affines, norms, strict=True):
        assert scale.shape == shift.shape == (3, norm.scale.shape[1])


def test_blend_is_a_weighted_mean_scaled_by_strength():
    vectors = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(np.asarray(blend_vectors(vectors, [3, 1], 0.5)),
                               [[0.375, 0.25]])
    assert float(jnp.abs(blend_vectors(vectors, [1, 1], 0.0)).max()) == 0.0


def test_config_round_trip():
    assert AnyStyleConfig.from_dict(TINY.to_dict()) == TINY


def test_held_out_pictures_never_enter_the_corpus(tmp_path):
    _, styles = held_out_names()
    held = sorted(styles)[0]
    from PIL import Image

    for name in (held, "kept.png"):
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / name)
    corpus = StyleCorpus([tmp_path], cache_side=32)
    assert [p.name for p in corpus.paths] == ["kept.png"] and corpus.excluded == 1
    assert corpus.images[0].shape[:2] == (21, 32)


def test_augmentation_is_a_function_of_the_generator_state():
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)

    def draw(seed):
        rng = np.random.default_rng(seed)
        return augmented_style(rgb, rng, 24, colour_jitter(rng))

    a, b, c = draw(1), draw(1), draw(2)
    assert a.shape == (24, 24, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def tiny_run(tmp_path, content, **overrides) -> AnyStyleTrainConfig:
    fields = dict(content=str(content), corpus=["../shared/data/style"],
                  out=str(tmp_path / "run"), steps=6, batch=2, identity_batch=1, size=32,
                  style_side=64, channels=(8, 16, 16), res_blocks=1, style_dim=8, hidden=16,
                  cache_side=48, corpus_cache_side=96, adv_start=0, adv_ramp=1,
                  log_every=1, sample_every=100, ckpt_every=3)
    return AnyStyleTrainConfig(**{**fields, **overrides})


@pytest.mark.slow
def test_training_steps_are_deterministic_and_lower_the_style_loss(tmp_path, few_photos):
    trainer = AnyStyleTrainer(tiny_run(tmp_path, few_photos, lr_g=5e-3, warmup=1))
    batch = trainer.stream.batch_at(0)
    first = None
    state = trainer.state
    for _ in range(8):  # the same batch over and over: the losses must fall
        state, metrics = trainer.train_step(state, batch)
        first = first or {k: float(v) for k, v in metrics.items()}
    assert float(metrics["style"]) < first["style"]
    assert all(np.isfinite(float(v)) for v in metrics.values())
    np.testing.assert_array_equal(trainer.stream.batch_at(5)["style"],
                                  trainer.stream.batch_at(5)["style"])
    trainer.state = state
    grid = trainer.sample_grid(tmp_path / "grid.png")
    assert grid.is_file() and grid.stat().st_size > 1000


def test_saved_model_loads_equal_and_damage_is_reported(model, tmp_path):
    from stylejax.anystyle import MODEL_WEIGHTS, load_model, save_model
    from stylejax.errors import WeightsError

    save_model(tmp_path / "m", model, {"steps": 3})
    again = load_model(tmp_path / "m")
    photo, z = _pictures(4, 1, 32), jnp.ones((1, TINY.style_dim))
    np.testing.assert_allclose(np.asarray(again(photo, z)), np.asarray(model(photo, z)),
                               atol=1e-6)
    (tmp_path / "m" / MODEL_WEIGHTS).write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="damaged"):
        load_model(tmp_path / "m")
    with pytest.raises(WeightsError, match="missing"):
        load_model(tmp_path / "nothing")


def test_as_generator_is_the_same_network_for_the_pack_serving_stack(feature_net):
    from stylejax.anystyle import as_generator, style_row

    # Its own seed, so equal outputs cannot come from two equal random initialisations.
    model = AnyStyleModel(TINY, statistics_size(feature_net, TINY.taps), rngs=nnx.Rngs(7))

    wide = as_generator(model)
    assert wide.config.num_styles == 1 + TINY.style_dim
    photo = _pictures(5, 2, 32)
    z = jnp.asarray(np.random.default_rng(6).normal(size=(2, TINY.style_dim)), jnp.float32)
    np.testing.assert_allclose(np.asarray(wide(photo, jnp.asarray(style_row(z)))),
                               np.asarray(model(photo, z)), atol=1e-5)


def _leaves(trainer) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(trainer.state.g))]


@pytest.mark.slow
def test_any_style_run_resumes_exactly_and_exports_a_model_through_the_cli(tmp_path,
                                                                          few_photos):
    from stylejax.anystyle import load_model
    from trainer.cli import main
    from trainer.loop import run_loop

    straight = AnyStyleTrainer(tiny_run(tmp_path / "a", few_photos))
    run_loop(straight, until=4, progress=False)
    first = AnyStyleTrainer(tiny_run(tmp_path / "b", few_photos))
    run_loop(first, until=2, progress=False)
    first.ckpt.close()
    second = AnyStyleTrainer(tiny_run(tmp_path / "b", few_photos))  # as a new process would
    assert second.step == 2
    run_loop(second, until=4, progress=False)
    for x, y in zip(_leaves(straight), _leaves(second), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert (tmp_path / "a" / "run" / "metrics.jsonl").read_text().count("\n") == 4

    run = tmp_path / "cli"
    args = ["train", "--mode", "any-style", "--content", str(few_photos),
            "--corpus", "../shared/data/style", "--out", str(run), "--steps", "2",
            "--batch", "2", "--size", "32", "--style-side", "64", "--channels", "8", "16", "16",
            "--res-blocks", "1", "--style-dim", "8", "--hidden", "16", "--cache-side", "48",
            "--corpus-cache-side", "96", "--no-progress", "--export", str(tmp_path / "model")]
    assert main(args) == 0
    model = load_model(tmp_path / "model")
    assert model.config.style_dim == 8 and model.config.generator.upsample == "nearest"
    # trained without the palette map, it still serves with the default amount and side
    from stylejax.anystyle import ANYSTYLE_WORK_SIDE, model_palette, model_work_side
    from stylejax.colour import DEFAULT_PALETTE

    assert model_palette(tmp_path / "model") == DEFAULT_PALETTE
    assert model_work_side(tmp_path / "model") == ANYSTYLE_WORK_SIDE


def test_a_pack_made_from_the_model_serves_each_picture_as_its_style(model, feature_net,
                                                                      tmp_path):
    from stylejax.anystyle import ENCODER_SIDE, save_model
    from stylejax.imageio import decode_image, resize_long_side, to_float
    from stylejax.pack import load_pack
    from trainer.cli import main

    save_model(tmp_path / "model", model)
    pictures = ["../shared/data/style/S04_kandinsky_composition_viii.png",
                "../shared/data/style/S11_texture_wood_planks.jpg"]
    assert main(["anystyle-pack", "--model", str(tmp_path / "model"), "--styles", *pictures,
                 "--out", str(tmp_path / "pack"),
                 "--style-meta", "trainer/default_styles.json"]) == 0
    pack = load_pack(tmp_path / "pack")
    assert [s.id for s in pack.styles] == ["kandinsky", "wood"]
    assert all(s.thumbnail for s in pack.styles) and all(s.license for s in pack.styles)
    photo = _pictures(8, 1, 32)
    for k, picture in enumerate(pictures):
        rgb = resize_long_side(decode_image(picture).rgb, ENCODER_SIDE)
        z = model.encode(feature_net, jnp.asarray(to_float(rgb))[None])
        np.testing.assert_allclose(np.asarray(pack.generator(photo, jax.nn.one_hot(
            jnp.array([k]), 2))), np.asarray(model(photo, z)), atol=1e-5)


def test_jittered_loss_is_deterministic_and_differs_from_no_jitter(tmp_path, few_photos):
    plain = AnyStyleTrainer(tiny_run(tmp_path / "p", few_photos))
    jittered = AnyStyleTrainer(tiny_run(tmp_path / "j", few_photos, jitter=3))
    again = AnyStyleTrainer(tiny_run(tmp_path / "k", few_photos, jitter=3))
    batch = plain.stream.batch_at(0)
    metrics = [t.train_step(t.state, batch)[1] for t in (plain, jittered, again)]
    assert float(metrics[1]["style"]) == float(metrics[2]["style"])
    assert float(metrics[1]["style"]) != float(metrics[0]["style"])


def test_the_palette_map_in_the_step_is_the_serving_one_and_is_exported(tmp_path, few_photos):
    """colour_match: the losses see the result with the style's palette (the serving map,
    computed without gradient), the step stays finite, and the export carries the amount."""
    from stylejax.anystyle import model_palette
    from stylejax.colour import colour_stats, match_colours
    from trainer.anystyle import _with_style_palette, export_model

    rng = np.random.default_rng(0)
    fake = rng.uniform(0.2, 0.6, (2, 16, 16, 3)).astype(np.float32)
    style = np.clip(rng.normal([0.7, 0.3, 0.2], 0.1, (2, 24, 24, 3)), 0, 1).astype(np.float32)
    seen = np.asarray(_with_style_palette(jnp.asarray(fake), jnp.asarray(style), 0.6))
    for i in range(2):
        stats = colour_stats(style[i])
        # the serving map reads a subsample; at 24 px it reads every pixel, as the step does
        np.testing.assert_allclose(seen[i], match_colours(fake[i], stats, 0.6), atol=2e-3)
    cfg = tiny_run(tmp_path, few_photos, colour_match=0.6, steps=3)
    trainer = AnyStyleTrainer(cfg)
    state, metrics = trainer.train_step(trainer.state, trainer.stream.batch_at(0))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    trainer.state = state
    trainer.ckpt.save(trainer.step, trainer.state, force=True)
    trainer.ckpt.wait()
    out = export_model(cfg.out, tmp_path / "model")
    assert model_palette(out) == 0.6
    assert model_palette(export_model(cfg.out, tmp_path / "other", palette=0.25)) == 0.25


def test_turned_and_zoomed_views_are_deterministic_and_change_the_loss(tmp_path, few_photos):
    """rotate / zoom (trainer/views.py): the same seed gives the same step, and the losses
    differ from the plain step's, so the views really reach the feature net."""
    plain = AnyStyleTrainer(tiny_run(tmp_path / "p", few_photos))
    turned = AnyStyleTrainer(tiny_run(tmp_path / "t", few_photos, rotate=30.0, zoom=1.25))
    again = AnyStyleTrainer(tiny_run(tmp_path / "a", few_photos, rotate=30.0, zoom=1.25))
    batch = plain.stream.batch_at(0)
    metrics = [t.train_step(t.state, batch)[1] for t in (plain, turned, again)]
    assert all(np.isfinite(float(v)) for v in metrics[1].values())
    assert float(metrics[1]["style"]) == float(metrics[2]["style"])
    assert float(metrics[1]["content"]) == float(metrics[2]["content"])
    assert float(metrics[1]["style"]) != float(metrics[0]["style"])
    # the identity photos are compared in pixels, untouched by the views
    np.testing.assert_allclose(float(metrics[1]["identity"]), float(metrics[0]["identity"]),
                               rtol=1e-5)


def test_views_survive_the_jitter(tmp_path, few_photos):
    """With both on, the loss sees the turned result, shifted: until 2026-12-02 the jitter
    replaced the turned views by the plain result (run F trained so; docs/training.md)."""
    jittered = AnyStyleTrainer(tiny_run(tmp_path / "j", few_photos, jitter=3))
    both = AnyStyleTrainer(tiny_run(tmp_path / "b", few_photos, jitter=3, rotate=30.0,
                                    zoom=1.25))
    still = AnyStyleTrainer(tiny_run(tmp_path / "s", few_photos, jitter=3, rotate=1e-6))
    batch = jittered.stream.batch_at(0)
    metrics = [t.train_step(t.state, batch)[1] for t in (jittered, both, still)]
    assert float(metrics[1]["content"]) != float(metrics[0]["content"])
    # a turn of ~0 degrees is the jittered step itself (the view is then the identity)
    np.testing.assert_allclose(float(metrics[2]["content"]), float(metrics[0]["content"]),
                               rtol=1e-3)


def test_coarser_style_scales_add_gram_terms(tmp_path, few_photos):
    """`style_scales` adds Gram terms on the shrunk result and style picture: the style term
    changes, the content term does not (the default, (1.0,), is the plain step)."""
    plain = AnyStyleTrainer(tiny_run(tmp_path / "p", few_photos))
    two = AnyStyleTrainer(tiny_run(tmp_path / "t", few_photos, style_scales=(1.0, 0.5)))
    assert plain.loss_cfg.style_scales == (1.0,)
    batch = plain.stream.batch_at(0)
    m = [t.train_step(t.state, batch)[1] for t in (plain, two)]
    assert abs(float(m[1]["style"]) - float(m[0]["style"])) > 1e-4 * float(m[0]["style"])
    np.testing.assert_allclose(float(m[1]["content"]), float(m[0]["content"]), rtol=1e-6)
    # the mean of two terms: 2 * two - plain is the half-scale term alone, a positive loss
    assert 2 * float(m[1]["style"]) - float(m[0]["style"]) > 0


def test_content_taps_reach_the_content_term(tmp_path, few_photos):
    """`content_taps` (flag --content-taps) averages the content term over the named taps: a
    finer tap beside stage4 changes the content term and leaves the style term alone."""
    plain = AnyStyleTrainer(tiny_run(tmp_path / "p", few_photos))
    finer = AnyStyleTrainer(tiny_run(tmp_path / "f", few_photos,
                                     content_taps=("stage2", "stage4")))
    assert plain.loss_cfg.content_taps == ("stage4",)
    assert finer.loss_cfg.content_taps == ("stage2", "stage4")
    batch = plain.stream.batch_at(0)
    m = [t.train_step(t.state, batch)[1] for t in (plain, finer)]
    assert abs(float(m[1]["content"]) - float(m[0]["content"])) > 1e-4 * float(m[0]["content"])
    np.testing.assert_allclose(float(m[1]["style"]), float(m[0]["style"]), rtol=1e-6)


def test_a_run_can_start_from_an_exported_model_and_refuses_another_shape(tmp_path,
                                                                          few_photos):
    from stylejax.anystyle import load_model, save_model

    source = AnyStyleModel(TINY, statistics_size(load_feature_net(), TINY.taps),
                           rngs=nnx.Rngs(7))
    save_model(tmp_path / "m", source)
    trainer = AnyStyleTrainer(tiny_run(tmp_path / "r", few_photos,
                                       init_model=str(tmp_path / "m")))
    assert trainer.step == 0
    photo = _pictures(1, 1, 32)
    z = jnp.ones((1, TINY.style_dim))
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(np.asarray(trainer.model(ema=True)(photo, z)),
                               np.asarray(loaded(photo, z)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(trainer.model(ema=False)(photo, z)),
                               np.asarray(loaded(photo, z)), atol=1e-6)
    # a resumed run keeps its checkpoint, not the model it started from
    state, _ = trainer.train_step(trainer.state, trainer.stream.batch_at(0))
    trainer.state = state
    trainer.ckpt.save(trainer.step, trainer.state, force=True)
    trainer.ckpt.wait()
    resumed = AnyStyleTrainer(tiny_run(tmp_path / "r", few_photos,
                                       init_model=str(tmp_path / "m")))
    assert resumed.step == 1
    # the decoder may change from nearest to bilinear: same weights, another upsampling
    moved = AnyStyleTrainer(tiny_run(tmp_path / "b", few_photos, upsample="bilinear",
                                     init_model=str(tmp_path / "m")))
    for got, want in zip(jax.tree.leaves(moved.state.g_ema),
                         jax.tree.leaves(nnx.state(loaded, nnx.Param)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert moved.model().generator.config.upsample == "bilinear"
    # the decoder may gain the photo skip: its new kernels start at zero, the same function
    grown = AnyStyleTrainer(tiny_run(tmp_path / "s", few_photos, photo_skip=True,
                                     init_model=str(tmp_path / "m")))
    assert grown.model().generator.config.photo_skip
    np.testing.assert_allclose(np.asarray(grown.model(ema=True)(photo, z)),
                               np.asarray(loaded(photo, z)), atol=1e-6)
    with pytest.raises(ValueError, match="parameter shapes"):
        AnyStyleTrainer(tiny_run(tmp_path / "w", few_photos, channels=(8, 16, 24),
                                 init_model=str(tmp_path / "m")))


def test_without_blocks_is_the_model_whose_dropped_blocks_add_nothing():
    """Dropping residual block i (with its norms' style-head columns) gives exactly the model
    in which block i's last norm outputs zero, so the block passes its input through."""
    from stylejax.anystyle import without_blocks

    cfg = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                   res_blocks=3, upsample="bilinear-edge"),
                         style_dim=8, hidden=16, taps=TINY.taps)
    model = AnyStyleModel(cfg, statistics_size(load_feature_net(), cfg.taps), rngs=nnx.Rngs(3))
    model.head.proj.kernel[...] = model.head.proj.kernel[...] * 50  # styles that really differ
    photo, z = _pictures(1, 1, 32), jnp.asarray(np.random.default_rng(0).normal(size=(1, 8)))
    small = without_blocks(model, [1])
    assert small.config.generator.res_blocks == 2 and len(small.generator.res) == 2
    # block 1's second norm is norm 2 + 2·1 + 1 = 5: zero its table and its head columns
    norm = model.generator.res[1].norm2
    norm.scale[...], norm.shift[...] = jnp.zeros_like(norm.scale[...]), jnp.zeros_like(
        norm.shift[...])
    starts = np.cumsum([0] + [2 * c for c in model.head.channels])
    kernel = np.array(model.head.proj.kernel[...])
    kernel[:, starts[5]:starts[6]] = 0.0
    model.head.proj.kernel[...] = jnp.asarray(kernel)
    np.testing.assert_allclose(np.asarray(small(photo, z)), np.asarray(model(photo, z)),
                               atol=1e-5)
    assert float(jnp.abs(small(photo, z) - without_blocks(model, [0])(photo, z)).max()) > 1e-3
    with pytest.raises(ValueError, match="blocks to drop"):
        without_blocks(model, [3])


def test_a_run_can_start_from_a_model_with_more_blocks(tmp_path, few_photos):
    """--init-drop-blocks: a run with fewer residual blocks starts as the exported model
    without them (`without_blocks`)."""
    from stylejax.anystyle import load_model, save_model, without_blocks

    cfg = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                   res_blocks=2, upsample="nearest"),
                         style_dim=8, hidden=16, taps=TINY.taps)
    save_model(tmp_path / "m", AnyStyleModel(cfg, statistics_size(load_feature_net(), cfg.taps),
                                             rngs=nnx.Rngs(5)))
    trainer = AnyStyleTrainer(tiny_run(tmp_path / "r", few_photos, res_blocks=1,
                                       init_model=str(tmp_path / "m"), init_drop_blocks=(1,)))
    want = without_blocks(load_model(tmp_path / "m"), [1])
    photo, z = _pictures(1, 1, 32), jnp.ones((1, 8))
    np.testing.assert_allclose(np.asarray(trainer.model(ema=True)(photo, z)),
                               np.asarray(want(photo, z)), atol=1e-6)


def test_a_run_on_two_photos_and_one_style_picture_draws_its_grid(tmp_path, few_photos):
    """A fine-tune on a handful (one photo and one painting, say) must not need four of each
    for its sample grid."""
    import shutil

    content, style = tmp_path / "photos", tmp_path / "style"
    content.mkdir()
    style.mkdir()
    for p in sorted(few_photos.iterdir())[:2]:
        shutil.copy(p, content / p.name)
    shutil.copy("../shared/data/style/S05_vangogh_village_street_auvers.png", style)
    trainer = AnyStyleTrainer(tiny_run(tmp_path, content, corpus=[str(style)],
                                       data_root=str(tmp_path / "no-eval-set")))
    tiles, styles = trainer.samples
    assert (len(tiles), len(styles)) == (2, 1)
    grid = trainer.sample_grid(tmp_path / "grid.png")
    from PIL import Image

    assert Image.open(grid).size[0] > 0


PHOTO_AWARE = AnyStyleConfig(generator=TINY.generator, style_dim=8, hidden=16, taps=TINY.taps,
                             photo_hidden=12)


def test_a_photo_aware_model_starts_as_the_plain_vector_and_then_reads_the_photo(feature_net):
    model = AnyStyleModel(PHOTO_AWARE, statistics_size(feature_net, TINY.taps),
                          rngs=nnx.Rngs(0))
    assert model.photo_aware and not AnyStyleModel(
        TINY, statistics_size(feature_net, TINY.taps), rngs=nnx.Rngs(0)).photo_aware
    style = jnp.repeat(_pictures(1, 1, 64), 2, axis=0)
    photos = jnp.concatenate([_pictures(2, 1, 64), jnp.full((1, 64, 64, 3), 0.3)])
    plain = model.encode(feature_net, style)
    # the correction's output layer starts at zero: the same vector whatever the photo
    np.testing.assert_allclose(np.asarray(model.encode(feature_net, style, photos)),
                               np.asarray(plain), atol=1e-6)
    model.photo.fc2.kernel[...] = jnp.asarray(
        np.random.default_rng(0).normal(0, 0.1, model.photo.fc2.kernel.shape), jnp.float32)
    aware = model.encode(feature_net, style, photos)
    assert float(jnp.linalg.norm(aware[0] - aware[1])) > 1e-3  # one style, two photos
    np.testing.assert_allclose(np.asarray(model.encode(feature_net, style)), np.asarray(plain),
                               atol=1e-6)  # no photo given: the plain vector


def test_a_photo_aware_model_survives_saving_and_dropping_blocks(tmp_path, feature_net):
    from stylejax.anystyle import load_model, save_model, without_blocks

    cfg = AnyStyleConfig(generator=GeneratorConfig(num_styles=1, channels=(8, 16, 16),
                                                   res_blocks=2, upsample="nearest"),
                         style_dim=8, hidden=16, taps=TINY.taps, photo_hidden=12)
    model = AnyStyleModel(cfg, statistics_size(feature_net, cfg.taps), rngs=nnx.Rngs(1))
    model.photo.fc2.kernel[...] = jnp.ones(model.photo.fc2.kernel.shape) * 0.05
    style, photo = _pictures(3, 1, 64), _pictures(4, 1, 64)
    want = model.encode(feature_net, style, photo)
    loaded = load_model(save_model(tmp_path / "m", model))
    assert loaded.config == cfg
    np.testing.assert_allclose(np.asarray(loaded.encode(feature_net, style, photo)),
                               np.asarray(want), atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(without_blocks(model, [1]).encode(feature_net, style, photo)),
        np.asarray(want), atol=1e-6)
    # a model saved before the option existed reads as a plain one
    old = {k: v for k, v in TINY.to_dict().items() if k != "photo_hidden"}
    assert AnyStyleConfig.from_dict(old).photo_hidden == 0


def test_a_photo_aware_run_grows_from_a_plain_model_and_trains_its_correction(tmp_path,
                                                                              few_photos):
    """--photo-hidden on a run started from a plain model: the correction is added with its
    output layer at zero, so the run starts as the model, and the step trains it."""
    from stylejax.anystyle import load_model, save_model

    save_model(tmp_path / "m", AnyStyleModel(TINY, statistics_size(load_feature_net(),
                                                                   TINY.taps),
                                             rngs=nnx.Rngs(7)))
    trainer = AnyStyleTrainer(tiny_run(tmp_path / "r", few_photos, photo_hidden=12,
                                       init_model=str(tmp_path / "m"), lr_g=5e-3, warmup=1))
    feat, plain = load_feature_net(), load_model(tmp_path / "m")
    style, photo = _pictures(3, 1, 64), _pictures(4, 1, 64)
    grown = trainer.model()
    assert grown.photo_aware
    np.testing.assert_allclose(np.asarray(grown.encode(feat, style, photo)),
                               np.asarray(plain.encode(feat, style)), atol=1e-6)
    state = trainer.state
    for step in range(2):  # fc2 moves at once, fc1 once fc2 is no longer zero
        state, _ = trainer.train_step(state, trainer.stream.batch_at(step))
    assert float(jnp.abs(state.g["photo"]["fc2"]["kernel"][...]).max()) > 0
    trainer.state = state
    moved = trainer.model(ema=False)
    other = jnp.full((1, 64, 64, 3), 0.3)
    assert float(jnp.abs(moved.encode(feat, style, photo)
                         - moved.encode(feat, style, other)).max()) > 1e-6
    with pytest.raises(ValueError, match="photo_hidden"):
        tiny_run(tmp_path / "n", few_photos, photo_hidden=-1).validate()
