"""The distill mode (trainer/distill.py) and the video generator it makes (Stylizer.for_video)."""

from __future__ import annotations

import shutil

import jax
import numpy as np
import pytest

from stylejax import Stylizer
from stylejax.errors import WeightsError
from stylejax.pack import load_pack, save_pack
from stylejax.request import StyleRequest
from trainer.distill import DistillConfig, DistillTrainer, distill_loss, style_weights
from trainer.loop import run_loop


def tiny_run(out, teacher, content) -> DistillConfig:
    return DistillConfig(teacher=str(teacher), content=str(content), out=str(out),
                         steps=4, batch=2, size=32, cache_side=48, channels=(8, 8, 16),
                         res_blocks=1, log_every=1, sample_every=2, ckpt_every=2, holdout=2)


def _leaves(task) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(task.state.g))]


def test_style_weights_are_one_hot_or_two_style_blends_that_sum_to_one():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, size=400).astype(np.int32)
    w = style_weights(np.random.default_rng(1), ids, 5, 0.5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert (w[np.arange(400), ids] >= 0.2 - 1e-6).all()      # the drawn style stays in
    blends = (w > 0).sum(axis=1)
    assert set(blends) == {1, 2} and 0.35 < (blends == 2).mean() < 0.65
    assert (style_weights(np.random.default_rng(1), ids, 5, 0.0).max(axis=1) == 1).all()


def test_distill_loss_is_zero_for_the_teachers_picture_and_counts_edges():
    rng = np.random.default_rng(0)
    t = rng.random((2, 16, 16, 3)).astype(np.float32)
    loss, parts = distill_loss(t, t, 1.0)
    assert float(loss) == 0.0
    shifted = np.roll(t, 1, axis=2)  # same colours, moved edges
    _, p = distill_loss(shifted, t, 1.0)
    assert float(p["edge"]) > 0.05 and float(p["pixel"]) > 0.05
    flat = np.full_like(t, t.mean())  # the mean picture: edges all wrong
    _, q = distill_loss(flat, t, 1.0)
    assert float(q["edge"]) > 0.1


@pytest.mark.slow
def test_distill_resumes_exactly_exports_a_video_pack_and_clips_use_it(tmp_path, two_style_pack,
                                                                      few_photos):
    teacher = tmp_path / "teacher"
    shutil.copytree(two_style_pack, teacher)
    straight = DistillTrainer(tiny_run(tmp_path / "a", teacher, few_photos))
    metrics = run_loop(straight, until=4, progress=False)
    assert {"loss", "pixel", "edge", "psnr"} <= set(metrics)
    first = DistillTrainer(tiny_run(tmp_path / "b", teacher, few_photos))
    run_loop(first, until=2, progress=False)
    first.ckpt.close()
    second = DistillTrainer(tiny_run(tmp_path / "b", teacher, few_photos))  # as a new process would
    assert int(second.state.step) == 2
    run_loop(second, until=4, progress=False)
    for x, y in zip(_leaves(straight), _leaves(second), strict=True):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    assert (tmp_path / "a" / "samples" / "step_000004.png").is_file()

    from trainer.cli import main

    args = ["train", "--mode", "distill", "--teacher", str(teacher), "--content",
            str(few_photos), "--out", str(tmp_path / "cli"), "--steps", "2",
            "--batch", "2", "--size", "32", "--cache-side", "48", "--channels", "8", "8", "16",
            "--res-blocks", "1", "--holdout", "2", "--no-progress",
            "--export", str(teacher / "video")]
    assert main(args) == 0
    student = load_pack(teacher / "video")
    assert [s.id for s in student.styles] == ["a", "b"]
    assert student.config.channels == (8, 8, 16) and student.config.res_blocks == 1
    assert student.training["mode"] == "distill" and student.training["steps"] == 2
    assert np.isfinite(student.training["psnr_vs_teacher_db"])

    stylizer = Stylizer(teacher, backend="jax")
    video = stylizer.for_video()
    assert video is not stylizer and video.pack.config == student.config
    assert video.for_video() is video
    assert Stylizer(two_style_pack, backend="jax").for_video().pack.config.channels == (8, 16, 16)

    from stylejax.video import probe_video, read_frames, stylize_video
    from tests.test_video import make_clip

    clip = make_clip(tmp_path / "in.mp4")
    req = StyleRequest.create(style="a")
    out_fast, out_full = tmp_path / "fast.mp4", tmp_path / "full.mp4"
    stylize_video(stylizer, req, clip, out_fast, stable=False)
    stylize_video(stylizer, req, clip, out_full, stable=False, full_generator=True)
    assert probe_video(out_fast).frames == probe_video(out_full).frames == probe_video(clip).frames

    def first_frame(path):
        return next(iter(read_frames(path, probe_video(path)))).image.astype(np.float32)

    # another network made the frames (the tiny student is untrained: far from its teacher)
    assert np.abs(first_frame(out_fast) - first_frame(out_full)).mean() > 1.0


def test_a_video_generator_with_other_styles_is_refused(tmp_path, two_style_pack,
                                                        tiny_generator):
    from stylejax.pack import StyleInfo

    teacher = tmp_path / "teacher"
    shutil.copytree(two_style_pack, teacher)
    save_pack(teacher / "video", tiny_generator, [StyleInfo("a", {"en": "A"}),
                                                  StyleInfo("c", {"en": "C"})])
    with pytest.raises(WeightsError, match="other styles"):
        Stylizer(teacher, backend="jax").for_video()
