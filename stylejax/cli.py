"""`stylize`: stylise photos from the command line with a pack style or any style picture."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import GENERIC_ERROR, RegionNotFoundError, StyleJAXError
from .request import StyleRequest, parse_region

_FORMATS = {".png", ".jpg", ".jpeg", ".webp"}
# Video outputs (stylejax.video.OUTPUT_SUFFIXES); .webp is animated for an animated input.
_VIDEO_FORMATS = {".mp4", ".mov", ".mkv", ".webm", ".gif", ".webp"}
# 3D models whose textures are stylised (stylejax.mesh_textures): the output keeps the format.
_MODEL_FORMATS = {".glb", ".gltf", ".obj"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stylize",
        description="Turn photos into the style of a painting: a trained style from a pack "
                    "(--style) or any picture (--style-image); --region for a style per "
                    "region (person, background, clothing, sky, face).",
        epilog="examples: stylize photo.jpg --style starry --region background -o out.png | "
               "stylize photo.jpg --region background=starry --region person=wave "
               "--keep faces -o out.png",
    )
    p.add_argument("photos", nargs="*", metavar="PHOTO",
                   help="photos, video clips (.mp4 .mov .webm .mkv), animated GIF/WebP or "
                        "3D models (.glb .gltf .obj: their textures) to stylise")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--style", help="style id from the pack (or a prefix); blend several with "
                                   "'starry=0.6,wave=0.4'")
    g.add_argument("--style-image", metavar="IMG", help="any picture to take the style from")
    p.add_argument("--strength", type=float, default=1.0, help="0 = the photo, 1 = full style")
    p.add_argument("--preserve-colors", action="store_true", help="keep the photo's colours")
    p.add_argument("--stroke", default="medium", metavar="SIZE",
                   help="brush stroke size relative to the picture: small, medium (default), "
                        "large, or a factor from 0.25 to 4")
    p.add_argument("--max-size", type=int, default=None, metavar="N",
                   help="long side of the result in pixels (default: photo size for pack "
                        "styles, 512 for --style-image)")
    p.add_argument("--mask", metavar="IMG",
                   help="local style: white areas of this picture get the style (the region "
                        "'mask')")
    p.add_argument("--region", action="append", metavar="REGION[=STYLE[:STRENGTH]]",
                   help="style only this region of the photo: person, background, clothing, "
                        "sky, face, everywhere (or mask, with --mask). Repeat it for a style "
                        "per region, e.g. --region background=starry --region person=wave "
                        "(then --style may be left out); STRENGTH 0..1 per region, e.g. "
                        "person=wave:0.6. The most specific region wins where they overlap "
                        "(mask > face > clothing > person > sky > background > everywhere); "
                        "the photo shows where no region applies. docs/regions.md")
    p.add_argument("--keep", action="append", metavar="REGION",
                   help="leave this region as in the photo, e.g. --keep faces (repeat, or "
                        "list with commas)")
    p.add_argument("--feather", type=float, default=None, metavar="PX",
                   help="widen region borders by about PX pixels (default 0: the masks' own "
                        "soft edges, which follow hair and outlines)")
    p.add_argument("--pack", metavar="DIR", help="style pack folder (default: the built-in pack)")
    p.add_argument("--list-styles", action="store_true", help="print the pack's style ids")
    p.add_argument("--refine", action="store_true",
                   help="--style-image: optimise on top of the instant any-style result "
                        "(slower, ~30 s)")
    p.add_argument("--steps", type=int, default=None, help="--style-image: optimisation steps")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="--style-image: stop after this many seconds")
    p.add_argument("--backend", choices=["auto", "jax", "onnx"], default="auto")
    p.add_argument("--no-stable", action="store_true",
                   help="videos: stylise each frame on its own (default: stable mode, no "
                        "flicker; docs/video.md)")
    p.add_argument("--full-generator", action="store_true",
                   help="videos: use the pack's own generator even when the pack has a "
                        "cheaper video generator (a video/ folder; the bundled pack has none: "
                        "docs/video.md)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file for one photo or clip (the format from its suffix: "
                        ".png .jpg .webp; .mp4 .mov .mkv .webm .gif .webp for clips), folder "
                        "for several; a 3D model keeps its format: .glb .gltf .obj)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _parse_style(spec: str) -> str | dict[str, float]:
    if "=" not in spec and "," not in spec:
        return spec
    blend: dict[str, float] = {}
    for part in spec.split(","):
        sid, _, weight = part.partition("=")
        try:
            blend[sid.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise StyleJAXError(f"Cannot read the blend weight in '{part}'.") from None
    return blend


def _region_options(args: argparse.Namespace) -> dict:
    """--region / --keep / --feather / --mask as StyleRequest.create's region keywords ({}
    when none is given). A --mask that no --region or --keep names is styled in --style."""
    regions = [parse_region(r) for r in args.region or ()]
    keep = [k for ks in args.keep or () for k in ks.split(",") if k.strip()]
    if not regions and not keep and args.feather is None:
        return {}
    named = {r.strip().lower() for r, _, _ in regions} | {k.strip().lower() for k in keep}
    if args.mask and "mask" not in named:
        regions.append(("mask", None, None))
    return {"regions": regions, "keep": keep, "feather": args.feather}


def _request(args: argparse.Namespace) -> StyleRequest:
    """The command line as a StyleRequest (validated by StyleRequest.create, as in every
    front end)."""
    choice: dict = {"style_image": args.style_image}
    if not args.style_image:
        choice = {}
        if args.style:
            style = _parse_style(args.style)
            choice = {"blend": style} if isinstance(style, dict) else {"style": style}
    return StyleRequest.create(**choice, strength=args.strength, refine=args.refine,
                               keep_colors=args.preserve_colors, stroke=args.stroke,
                               **_region_options(args))


def _video_suffix(path: str) -> str:
    """A clip's default output format in a folder: GIF stays GIF, WebP WebP, the rest mp4."""
    suffix = Path(path).suffix.lower()
    return suffix if suffix in (".gif", ".webp") else ".mp4"


def _model_suffix(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return suffix if suffix in _MODEL_FORMATS else ".glb"


def _outputs(photos: list[str], out: str, videos: set[str] | None = None,
             models: set[str] | None = None) -> list[Path]:
    videos, models = videos or set(), models or set()
    target = Path(out)
    suffix = target.suffix.lower()
    if len(photos) == 1 and photos[0] in models:
        from .mesh_textures import check_output

        target = check_output(photos[0], target)
        target.parent.mkdir(parents=True, exist_ok=True)
        return [target]
    if suffix in _MODEL_FORMATS:
        if len(photos) == 1:
            raise StyleJAXError("Only a 3D model is saved as .glb, .gltf or .obj; save a "
                                "photo as .png, .jpg or .webp, a clip as .mp4 or .gif.")
        raise StyleJAXError("With several inputs, -o must be a folder.")
    if len(photos) == 1 and suffix in _FORMATS | _VIDEO_FORMATS:
        is_video = photos[0] in videos
        if is_video and suffix not in _VIDEO_FORMATS:
            raise StyleJAXError("Save a video as .mp4, .mov, .mkv, .webm, .gif or .webp.")
        if not is_video and suffix not in _FORMATS:
            raise StyleJAXError("A photo is saved as .png, .jpg or .webp, not as a video.")
        target.parent.mkdir(parents=True, exist_ok=True)
        return [target]
    if suffix in _FORMATS | _VIDEO_FORMATS:
        raise StyleJAXError("With several photos, -o must be a folder.")
    target.mkdir(parents=True, exist_ok=True)
    outs, used = [], set()
    for p in photos:
        name, n = Path(p).stem, 1
        while name in used:  # same file name from different folders: never overwrite
            n += 1
            name = f"{Path(p).stem}-{n}"
        used.add(name)
        ext = (_video_suffix(p) if p in videos else
               _model_suffix(p) if p in models else ".png")
        outs.append(target / f"{name}{ext}")
    return outs


def run(args: argparse.Namespace) -> int:
    from .custom_style import CustomStyleConfig
    from .imageio import decode_image
    from .stylizer import Stylizer

    stylizer = Stylizer(args.pack, backend=args.backend)
    if args.list_styles:
        for info in stylizer.styles:
            print(info.id)
        return 0
    if not args.photos:
        raise StyleJAXError("Give at least one photo (or --list-styles).")
    if not args.style and not args.style_image and not args.region:
        raise StyleJAXError("Choose a style: --style NAME or --style-image IMG.")
    if not args.output:
        raise StyleJAXError("Give an output with -o OUT.")
    # the options are checked here, before any work: a typo fails at once
    request = _request(args)
    if not request.is_custom:  # style names → the pack's ids, before any photo is read
        request = request.resolved(stylizer.styles)
    if args.max_size is not None and args.max_size < 16:
        raise StyleJAXError(f"--max-size must be at least 16, got {args.max_size}.")
    for p in args.photos:
        if Path(p).is_dir():
            raise StyleJAXError(f"{Path(p).name} is a folder, not a photo.")
    from .mesh_textures import is_model_file
    from .video import is_video_file

    models = {p for p in args.photos if is_model_file(p)}
    if models and args.style_image:
        raise StyleJAXError("3D models take a pack style (--style); a style picture works on "
                            "photos only.")
    if models and args.mask:
        raise StyleJAXError("--mask works on photos only, not on 3D models.")
    videos = {p for p in args.photos if p not in models and is_video_file(p)}
    if videos and args.style_image:
        raise StyleJAXError("Videos take a pack style (--style); a style picture works on "
                            "photos only.")
    if videos and args.mask:
        raise StyleJAXError("--mask works on photos only, not on videos.")
    for kind, files in (("videos", videos), ("3D models", models)):
        if files and request.regions is not None and not args.mask:
            raise StyleJAXError(f"--region and --keep work on photos only, not on {kind}.")
    outputs = _outputs(args.photos, args.output, videos, models)
    if models:
        _run_models(args, stylizer, request,
                    [(p, o) for p, o in zip(args.photos, outputs) if p in models])
        pairs = [(p, o) for p, o in zip(args.photos, outputs) if p not in models]
        if not pairs:
            return 0
        args.photos, outputs = [p for p, _ in pairs], [o for _, o in pairs]
    if videos:
        _run_videos(args, stylizer, request,
                    [(p, o) for p, o in zip(args.photos, outputs) if p in videos])
        pairs = [(p, o) for p, o in zip(args.photos, outputs) if p not in videos]
        if not pairs:
            return 0
        photos, outputs = [p for p, _ in pairs], [o for _, o in pairs]
    else:
        photos = list(args.photos)
    decoded = [_composited(decode_image(p, alpha="keep")) for p in photos]

    from tqdm import tqdm

    if args.style_image:
        style_img = decode_image(args.style_image).rgb
        size = args.max_size or 512
        cfg = CustomStyleConfig(size=size)
        if args.steps:
            cfg = CustomStyleConfig(size=size, steps=args.steps,
                                    time_budget_s=args.time_budget or 10**9)
        elif args.time_budget:
            cfg = CustomStyleConfig(size=size, time_budget_s=args.time_budget)
        # the any-style model answers in one pass: a progress bar only for optimising
        instant = stylizer.anystyle.available() and not request.refine
        for d, out in zip(decoded, outputs):
            bar = tqdm(total=100, desc=Path(out).name, unit="%", disable=args.quiet or instant,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

            def progress(frac, losses, bar=bar):
                bar.n = round(frac * 100)
                bar.set_postfix_str(f"style {losses['style']:.3f} content {losses['content']:.3f}")

            result = stylizer.run_custom(request, d.rgb, style_img, config=cfg,
                                         progress=progress)
            bar.close()
            _save(out, result.image, d)
            if not args.quiet:
                how = f"{result.steps} steps" if result.steps else "any-style model"
                print(f"{out}: {how} in {result.seconds:.1f} s", file=sys.stderr)
        return 0

    start = time.monotonic()
    written, missing = 0, []
    for p, d, out in tqdm(list(zip(photos, decoded, outputs)), desc="stylize",
                          disable=args.quiet or len(outputs) == 1):
        try:
            image = stylizer.run(request, d.rgb, mask=args.mask, max_size=args.max_size)
        except RegionNotFoundError as err:  # one photo without a person: say so, go on
            if len(outputs) == 1:
                raise
            print(f"stylize: error: {Path(p).name}: {err}", file=sys.stderr)
            missing.append(p)
            continue
        _save(out, image, d)
        written += 1
    if not args.quiet:
        print(f"wrote {written} picture(s) in {time.monotonic() - start:.1f} s",
              file=sys.stderr)
    return 2 if missing else 0


def _run_videos(args: argparse.Namespace, stylizer, request: StyleRequest,
                pairs: list[tuple[str, Path]]) -> None:
    """Each clip through stylejax.video.stylize_video, with a frames/s progress bar."""
    from tqdm import tqdm

    from .video import probe_video, stylize_video

    infos = [probe_video(src) for src, _ in pairs]  # every clip checked before any work
    for (src, out), info in zip(pairs, infos):
        bar = tqdm(total=info.frames, desc=Path(out).name, unit="frame", disable=args.quiet)

        def progress(frac, bar=bar, total=info.frames):
            bar.update(max(0, min(total, round(frac * total)) - bar.n))

        result = stylize_video(stylizer, request, src, out, stable=not args.no_stable,
                               progress=progress, full_generator=args.full_generator)
        bar.close()
        if not args.quiet:
            mode = "stable" if result.stable else "per-frame"
            print(f"{out}: {result.frames} frames ({mode}) in {result.seconds:.1f} s, "
                  f"{result.frames / max(result.seconds, 1e-9):.1f} frames/s", file=sys.stderr)


def _run_models(args: argparse.Namespace, stylizer, request: StyleRequest,
                pairs: list[tuple[str, Path]]) -> None:
    """Each model's textures through stylejax.mesh_textures, a line per texture."""
    from .mesh_textures import stylize_model

    for src, out in pairs:
        def progress(i, n, rep, src=src):
            if not args.quiet:
                print(f"{Path(src).name}: texture {i + 1}/{n} {rep.name} {rep.width}×"
                      f"{rep.height}, islands {rep.coverage:.0%} of it, {rep.seam_edges} seam "
                      f"sides padded, stroke {rep.stroke:.2f}, {rep.seconds:.1f} s",
                      file=sys.stderr)

        result = stylize_model(src, out, stylizer, request, progress=progress)
        if not args.quiet:
            print(f"{out}: {len(result.textures)} texture(s) in {result.seconds:.1f} s",
                  file=sys.stderr)


def _composited(decoded):
    """Stylise transparent photos as seen on white; the alpha is re-attached on saving."""
    if decoded.alpha is None:
        return decoded
    import dataclasses

    a = decoded.alpha[..., None].astype(np.float32) / 255.0
    rgb = np.round(decoded.rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)
    return dataclasses.replace(decoded, rgb=rgb)


def _save(out: Path, image: np.ndarray, decoded) -> None:
    from PIL import Image

    from .imageio import save_image

    alpha = decoded.alpha
    if alpha is not None and alpha.shape != image.shape[:2]:
        alpha = np.asarray(Image.fromarray(alpha).resize((image.shape[1], image.shape[0])))
    save_image(out, image, alpha=alpha if out.suffix.lower() in (".png", ".webp") else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except StyleJAXError as err:
        print(f"stylize: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"stylize: error: file not found: {Path(err.filename or '').name}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"stylize: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stylize: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - a bug: one line (STYLEJAX_DEBUG=1: traceback)
        if os.environ.get("STYLEJAX_DEBUG"):
            raise
        detail = str(err).splitlines()[0][:200] if str(err) else ""
        print(f"stylize: error: {GENERIC_ERROR} ({type(err).__name__}: {detail}; "
              "set STYLEJAX_DEBUG=1 for the details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
