"""`StyleRequest`: what a person asked for, defined once from front end to engine.

Every front end (CLI, notebook widget, HTTP API, Telegram, Discord) translates its own input
into a `StyleRequest` with `StyleRequest.create`, which is the one place the options are
checked and the one place their user-facing messages live. The service stores it as the job's
payload (`to_params` / `from_params`), the worker reads it back unchanged and hands it to
`Stylizer.run`. A new option (regions, media kind, ...) is a new field here, with its check in
`create` and its default in `from_params`, and it reaches every path.

    req = StyleRequest.create(style="starry", strength=0.7, stroke="large")
    image = Stylizer().run(req, "photo.jpg")
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError, echo
from .stroke import parse_stroke

if TYPE_CHECKING:
    from .pack import StyleInfo

# Key of the custom style picture's reference in a job's payload (the service stores a blob
# sha there and counts it as a blob reference: storage.STYLE_SHA_PARAM is this key).
STYLE_PICTURE_KEY = "style_sha"
# Key of the mask picture's reference (the region "mask": a hand-painted mask sent with the
# photo); the service stores its blob sha there (storage.MASK_SHA_PARAM is this key).
MASK_PICTURE_KEY = "mask_sha"
# "photo" (a still picture), "video" (a clip or an animated GIF / WebP: stylejax.video) or
# "model" (a GLB 3D model whose textures are stylised: stylejax.mesh_textures).
MEDIA_KINDS = ("photo", "video", "model")
# Media kinds whose jobs are long and go on the service's video lane (docs/service.md "Queue").
LONG_MEDIA = ("video", "model")
_MEDIA_ALIASES = {"image": "photo"}  # the name of "photo" before videos existed

Blend = tuple[tuple[str, float], ...]

# Regions a request can style (stylejax.compose makes their masks). "mask" is a mask the caller
# passes with the photo (the CLI's --mask FILE); "everywhere" is the whole picture. Listed from
# the most general to the most specific: where two regions overlap, the more specific one wins
# (everywhere < background < sky < person < clothing < face < mask), whatever order they
# were given in.
REGION_NAMES = ("everywhere", "background", "sky", "person", "clothing", "face", "mask")
_REGION_ALIASES = {"faces": "face", "people": "person", "persons": "person",
                   "clothes": "clothing", "all": "everywhere", "whole": "everywhere"}
KEEP_NAMES = REGION_NAMES[1:]  # what --keep may protect (not "everywhere")
MAX_FEATHER = 100.0  # pixels


def region_name(value: object, *, keep: bool = False) -> str:
    """A region as typed ("faces", "Background") → its canonical name; InvalidRequestError."""
    name = str(value).strip().lower()
    name = _REGION_ALIASES.get(name, name)
    known = KEEP_NAMES if keep else REGION_NAMES
    if name not in known:
        what = "keep" if keep else "style"
        raise InvalidRequestError(f"Unknown region {echo(value)!r} to {what}; choose from "
                                  f"{', '.join(known)}.")
    return name


@dataclass(frozen=True)
class RegionStyle:
    """One region's style: `style` None is the request's own style, `strength` None its
    strength."""

    region: str
    style: str | None = None
    strength: float | None = None


@dataclass(frozen=True)
class RegionSpec:
    """Where the style goes: styled regions (each with its style and strength), regions kept
    as in the photo (`keep`, over everything), and a feather radius in pixels of the result
    (0: the masks' own soft, edge-following borders). Pixels in no region show the photo."""

    entries: tuple[RegionStyle, ...] = ()
    keep: tuple[str, ...] = ()
    feather: float = 0.0

    @classmethod
    def create(cls, regions: Any = None, *, keep: Any = None,
               feather: float | str | None = None) -> RegionSpec:
        """Check a spec and raise InvalidRequestError with a message a user can act on.

        `regions`: region names ("background"), (region, style[, strength]) pairs, dicts
        {"region", "style", "strength"} or RegionStyle; `keep`: a name or a list of names.
        No styled region but a `keep` means "everywhere but what is kept".
        """
        if isinstance(regions, (str, Mapping, RegionStyle)):
            regions = [regions]
        entries: list[RegionStyle] = []
        for item in regions or ():
            entries.append(_region_style(item))
        seen: set[str] = set()
        for e in entries:
            if e.region in seen:
                raise InvalidRequestError(f"The region {e.region!r} is given twice; give each "
                                          "region once, with its style.")
            seen.add(e.region)
        if isinstance(keep, str):
            keep = [k for k in keep.split(",") if k.strip()]
        kept = tuple(dict.fromkeys(region_name(k, keep=True) for k in (keep or ())))
        both = seen & set(kept)
        if both:
            raise InvalidRequestError(f"{sorted(both)[0]!r} is both styled and kept; choose one.")
        try:
            radius = 0.0 if feather is None else float(feather)
        except (TypeError, ValueError):
            radius = math.nan
        if not 0.0 <= radius <= MAX_FEATHER:  # also rejects NaN
            raise InvalidRequestError(f"The feather radius must be between 0 and "
                                      f"{MAX_FEATHER:g} pixels, got {echo(feather)}.")
        if not entries and not kept:
            raise InvalidRequestError("Name at least one region to style or to keep.")
        if not entries:
            entries = [RegionStyle("everywhere")]
        return cls(entries=tuple(entries), keep=kept, feather=radius)

    @property
    def styles(self) -> tuple[str, ...]:
        """The pack styles the entries name themselves (not the request's own)."""
        return tuple(dict.fromkeys(e.style for e in self.entries if e.style is not None))

    @property
    def uses_mask(self) -> bool:
        """A user-given mask ("mask") is styled or kept."""
        return "mask" in {e.region for e in self.entries} | set(self.keep)

    def to_params(self) -> dict[str, Any]:
        entries = []
        for e in self.entries:
            d: dict[str, Any] = {"region": e.region}
            if e.style is not None:
                d["style"] = e.style
            if e.strength is not None:
                d["strength"] = e.strength
            entries.append(d)
        return {"entries": entries, "keep": list(self.keep), "feather": self.feather}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RegionSpec:
        """A stored spec back (validated when it was made, not now)."""
        return cls(entries=tuple(
            RegionStyle(str(e["region"]), e.get("style"),
                        None if e.get("strength") is None else float(e["strength"]))
            for e in params.get("entries", ())),
            keep=tuple(str(k) for k in params.get("keep", ())),
            feather=float(params.get("feather", 0.0)))


def parse_region(text: str) -> tuple[str, str | None, str | None]:
    """'background', 'person=wave' or 'person=wave:0.6' → (region, style, strength), as
    typed (RegionSpec.create checks them). The CLI's --region and the API's `regions`."""
    region, _, rest = str(text).partition("=")
    style, _, strength = rest.partition(":")
    return region.strip(), style.strip() or None, strength.strip() or None


def parse_regions(text: str | None) -> list[Any] | None:
    """The API's `regions` field → RegionSpec.create's entries; None when empty.

    Either the short syntax, comma-separated `--region` items
    ("background=starry,person=wave:0.7", "person"), or JSON: a list of region names,
    [region, style, strength] lists or {"region", "style", "strength"} objects.
    """
    text = (text or "").strip()
    if not text:
        return None
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except ValueError:
            raise InvalidRequestError("The regions are not valid JSON; write them as "
                                      "background=starry,person=wave:0.7 or as a JSON "
                                      "list.") from None
        if isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list):
            raise InvalidRequestError("The regions in JSON are a list of entries.")
        return value
    return [parse_region(part) for part in text.split(",") if part.strip()]


def _region_style(item: Any) -> RegionStyle:
    if isinstance(item, RegionStyle):
        region, style, strength = item.region, item.style, item.strength
    elif isinstance(item, str):
        region, style, strength = item, None, None
    elif isinstance(item, Mapping):
        unknown = set(item) - {"region", "style", "strength"}
        if unknown or "region" not in item:
            raise InvalidRequestError("A region entry takes 'region', 'style' and "
                                      "'strength'.")
        region, style, strength = item["region"], item.get("style"), item.get("strength")
    elif isinstance(item, Sequence) and 1 <= len(item) <= 3:
        region, style, strength = (*item, None, None)[:3]
    else:
        raise InvalidRequestError("A region entry is a region name, or a region with a "
                                  "style and a strength.")
    if style is not None:
        style = str(style).strip()
        if not style:
            style = None
    name = region_name(region)
    try:
        level = None if strength is None else check_strength(strength)
    except InvalidRequestError:
        raise InvalidRequestError(f"The strength of {name} must be between 0 and 1, got "
                                  f"{echo(strength)}.") from None
    return RegionStyle(name, style, level)


def check_strength(value: float | int | str | None) -> float:
    """A strength in 0..1 (0 = the photo, 1 = full style); InvalidRequestError otherwise."""
    try:
        strength = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidRequestError(f"Strength must be between 0 and 1, got {value}.") from None
    if not 0.0 <= strength <= 1.0:  # also rejects NaN
        raise InvalidRequestError(f"Strength must be between 0 and 1, got {value}.")
    return strength


def check_blend(blend: Mapping[str, float]) -> Blend:
    """{style id: weight} → sorted pairs; weights non-negative with a positive sum."""
    try:
        pairs = tuple(sorted((str(k), float(w)) for k, w in blend.items()))
    except (TypeError, ValueError):
        pairs = ()
    weights = [w for _, w in pairs]
    if (not pairs or not all(math.isfinite(w) and w >= 0 for w in weights)
            or sum(weights) <= 0):
        raise InvalidRequestError("Blend weights must be non-negative numbers with a positive "
                                  "sum, one per style.")
    return pairs


@dataclass(frozen=True)
class StyleRequest:
    """One stylisation request. Build it with `create` (validated); the fields are final.

    The style choice is exactly one of: `style` (a pack style id), `blend` ((id, weight) pairs,
    weights not yet normalised) or `style_image` (a reference to a custom style picture: a blob
    sha in the service, a file name in the CLI, any label for in-process callers who pass the
    picture itself to `Stylizer.run`).
    """

    style: str | None = None
    blend: Blend = ()
    style_image: str | None = None
    strength: float = 1.0
    keep_colors: bool = False
    stroke: float = 1.0          # stylejax.stroke: 1 = medium
    refine: bool = False         # custom styles: optimise from the any-style model's result
    media: str = "photo"         # MEDIA_KINDS: "photo" | "video" (clips, animations) | "model"
    regions: RegionSpec | None = None  # where the style goes (None: everywhere)
    mask: str | None = None      # the region "mask"'s picture: a blob sha in the service

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, *, style: str | None = None, blend: Mapping[str, float] | None = None,
               style_image: str | None = None, strength: float | str | None = 1.0,
               keep_colors: bool = False, stroke: float | str | None = 1.0,
               media: str = "photo", refine: bool = False,
               regions: Any = None, keep: Any = None,
               feather: float | str | None = None, mask: str | None = None) -> StyleRequest:
        """Check every option once and raise InvalidRequestError with a message a user can act
        on. `strength` / `stroke` None mean the defaults (full strength, medium strokes).
        `refine` (custom styles only) asks for the slower optimisation (~30 s) on top of the
        any-style model's instant result.

        `regions` / `keep` / `feather` (or a ready `RegionSpec` as `regions`): where the style
        goes (RegionSpec.create). Region entries without a style take the request's; when
        every entry names its own style the request's may be left out (it is then the first
        entry's).

        `mask` is a reference to the picture of the region "mask" (a blob sha in the service;
        in-process callers may pass the picture itself to `Stylizer.run` instead): only with a
        spec that styles or keeps "mask".
        """
        spec = None
        if regions is not None or keep is not None or feather is not None:
            spec = (regions if isinstance(regions, RegionSpec)
                    else RegionSpec.create(regions, keep=keep, feather=feather))
        if spec is not None and style is None and blend is None and style_image is None:
            if any(e.style is None for e in spec.entries):
                raise InvalidRequestError("Choose a style for every region, or one style for "
                                          "all of them.")
            style = spec.entries[0].style
        choices = sum(x is not None for x in (style, blend, style_image))
        if choices != 1:
            raise InvalidRequestError("Choose either a style or a style picture.")
        if refine and style_image is None:
            raise InvalidRequestError("Refine is for your own style picture; a gallery style "
                                      "is already at its best.")
        media = _MEDIA_ALIASES.get(media, media)
        if media not in MEDIA_KINDS:
            raise InvalidRequestError(f"Unsupported media kind {media!r}.")
        if media == "video" and style_image is not None:
            raise InvalidRequestError("Videos can be stylised with the gallery's styles only; "
                                      "a style picture of your own works on photos.")
        if media == "model" and style_image is not None:
            raise InvalidRequestError("3D models can be stylised with the gallery's styles "
                                      "only; a style picture of your own works on photos.")
        if spec is not None and media == "video":
            raise InvalidRequestError("Regions work on photos; a video is stylised everywhere.")
        if spec is not None and media == "model":
            raise InvalidRequestError("Regions work on photos; a 3D model's textures are "
                                      "stylised everywhere.")
        if spec is not None and style_image is not None:
            raise InvalidRequestError("Regions take the gallery's styles; a style picture of "
                                      "your own is applied everywhere.")
        if mask is not None and (spec is None or not spec.uses_mask):
            raise InvalidRequestError("A mask picture was sent, but no region names 'mask'; "
                                      "add regions=mask (or keep=mask), or leave the mask out.")
        return cls(style=None if style is None else str(style).strip(),
                   blend=() if blend is None else check_blend(blend),
                   style_image=style_image,
                   strength=1.0 if strength is None else check_strength(strength),
                   keep_colors=bool(keep_colors), stroke=parse_stroke(stroke), media=media,
                   refine=bool(refine), regions=spec, mask=mask)

    def with_changes(self, **changes: Any) -> StyleRequest:
        """A copy with some options changed, validated like `create` (a chat's "stronger",
        "another style", "refine" ...). A new `style` replaces the previous choice of any kind
        (and a pack style is never refined).

        `regions`: a RegionSpec replaces the request's, an empty value (`()`) removes it (the
        style everywhere); None, like every option, keeps it. The mask picture stays while
        the regions still use it."""
        changes = {k: v for k, v in changes.items() if v is not None}  # None: keep it
        regions = changes.pop("regions", self.regions)
        if not isinstance(regions, RegionSpec) and not regions:
            regions = None
        mask = self.mask if isinstance(regions, RegionSpec) and regions.uses_mask else None
        fields = {"strength": self.strength, "keep_colors": self.keep_colors,
                  "stroke": self.stroke, "media": self.media, "refine": self.refine,
                  "mask": mask, **self.choice_fields()}
        if {"style", "blend", "style_image"} & changes.keys():
            fields.update(style=None, blend=None, style_image=None, refine=False)
        fields.update(changes)
        return self.create(**fields, regions=regions)

    def choice_fields(self) -> dict[str, Any]:
        """The style choice as `create` keywords."""
        if self.style is not None:
            return {"style": self.style}
        if self.blend:
            return {"blend": dict(self.blend)}
        return {"style_image": self.style_image}

    def resolved(self, styles: Sequence[StyleInfo]) -> StyleRequest:
        """Style queries ("wave", "Starry") → the pack's ids; UnknownStyleError when one names
        no style. Done once where the pack is known, so stored jobs hold canonical ids."""
        from .pack import find_style

        req = self
        if req.regions is not None:
            entries = tuple(
                dataclasses.replace(e, style=None if e.style is None
                                    else styles[find_style(list(styles), e.style)].id)
                for e in req.regions.entries)
            req = dataclasses.replace(req, regions=dataclasses.replace(req.regions,
                                                                       entries=entries))
        if req.style is not None:
            return dataclasses.replace(req, style=styles[find_style(list(styles),
                                                                    req.style)].id)
        if req.blend:
            merged: dict[str, float] = {}
            for sid, w in req.blend:
                key = styles[find_style(list(styles), sid)].id
                merged[key] = merged.get(key, 0.0) + w
            return dataclasses.replace(req, blend=tuple(sorted(merged.items())))
        return req

    # -- what it is -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """"pack" (the pack's generator) or "custom" (optimised towards a picture)."""
        return "custom" if self.style_image is not None else "pack"

    @property
    def is_video(self) -> bool:
        """A clip or an animated picture (`stylejax.video.stylize_video`), not a photo."""
        return self.media == "video"

    @property
    def is_model(self) -> bool:
        """A 3D model whose textures are stylised (`stylejax.mesh_textures`)."""
        return self.media == "model"

    @property
    def long_lane(self) -> bool:
        """A long job (a clip, an animation, a 3D model): the service's video lane."""
        return self.media in LONG_MEDIA

    @property
    def is_custom(self) -> bool:
        return self.style_image is not None

    @property
    def style_choice(self) -> str | dict[str, float]:
        """A pack style id or {id: weight}, as `Stylizer.style_weights` takes it."""
        if self.is_custom:
            raise ValueError("a custom-style request has no pack style")
        return self.style if self.style is not None else dict(self.blend)

    # -- the job payload --------------------------------------------------------------------------
    def to_params(self) -> dict[str, Any]:
        """The JSON-able job payload; default-valued room fields are left out."""
        params: dict[str, Any] = {"strength": self.strength, "keep_colors": self.keep_colors,
                                  "stroke": self.stroke}
        if self.style is not None:
            params["style"] = self.style
        elif self.blend:
            params["blend"] = dict(self.blend)
        else:
            params[STYLE_PICTURE_KEY] = self.style_image
        if self.refine:
            params["refine"] = True
        if self.media != "photo":
            params["media"] = self.media
        if self.regions is not None:
            params["regions"] = self.regions.to_params()
        if self.mask is not None:
            params[MASK_PICTURE_KEY] = self.mask
        return params

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StyleRequest:
        """A stored payload back into the request it was made from (validated then, not now).

        Payloads written before a field existed load with its default (e.g. stroke = medium).
        """
        blend = params.get("blend")
        return cls(style=params.get("style"),
                   blend=tuple(sorted((str(k), float(w)) for k, w in blend.items()))
                   if blend else (),
                   style_image=params.get(STYLE_PICTURE_KEY),
                   strength=float(params.get("strength", 1.0)),
                   keep_colors=bool(params.get("keep_colors", False)),
                   stroke=float(params.get("stroke", 1.0)),
                   refine=bool(params.get("refine", False)),
                   media=_MEDIA_ALIASES.get(str(params.get("media", "photo")),
                                            str(params.get("media", "photo"))),
                   regions=RegionSpec.from_params(params["regions"])
                   if params.get("regions") else None,
                   mask=params.get(MASK_PICTURE_KEY))

    def batch_key(self) -> tuple:
        """Pack requests with equal keys can run as one engine batch."""
        return (self.kind, self.style, self.blend, self.strength, self.keep_colors,
                self.stroke, self.media, self.refine, self.regions, self.mask)
