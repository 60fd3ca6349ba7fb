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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequestError
from .stroke import parse_stroke

if TYPE_CHECKING:
    from .pack import StyleInfo

# Key of the custom style picture's reference in a job's payload (the service stores a blob
# sha there and counts it as a blob reference: storage.STYLE_SHA_PARAM is this key).
STYLE_PICTURE_KEY = "style_sha"
# "photo" (a still picture) or "video" (a clip or an animated GIF / WebP: stylejax.video).
MEDIA_KINDS = ("photo", "video")
_MEDIA_ALIASES = {"image": "photo"}  # the name of "photo" before videos existed

Blend = tuple[tuple[str, float], ...]


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
    media: str = "photo"         # "photo" | "video" (clips and animated GIF / WebP)
    regions: Mapping[str, Any] | None = None  # room for a style per region (None: everywhere)

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, *, style: str | None = None, blend: Mapping[str, float] | None = None,
               style_image: str | None = None, strength: float | str | None = 1.0,
               keep_colors: bool = False, stroke: float | str | None = 1.0,
               media: str = "photo", refine: bool = False) -> StyleRequest:
        """Check every option once and raise InvalidRequestError with a message a user can act
        on. `strength` / `stroke` None mean the defaults (full strength, medium strokes).
        `refine` (custom styles only) asks for the slower optimisation (~30 s) on top of the
        any-style model's instant result."""
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
        return cls(style=None if style is None else str(style).strip(),
                   blend=() if blend is None else check_blend(blend),
                   style_image=style_image,
                   strength=1.0 if strength is None else check_strength(strength),
                   keep_colors=bool(keep_colors), stroke=parse_stroke(stroke), media=media,
                   refine=bool(refine))

    def with_changes(self, **changes: Any) -> StyleRequest:
        """A copy with some options changed, validated like `create` (a chat's "stronger",
        "another style", "refine" ...). A new `style` replaces the previous choice of any kind
        (and a pack style is never refined)."""
        changes = {k: v for k, v in changes.items() if v is not None}  # None: keep it
        fields = {"strength": self.strength, "keep_colors": self.keep_colors,
                  "stroke": self.stroke, "media": self.media, "refine": self.refine,
                  **self.choice_fields()}
        if {"style", "blend", "style_image"} & changes.keys():
            fields.update(style=None, blend=None, style_image=None, refine=False)
        fields.update(changes)
        return dataclasses.replace(self.create(**fields), regions=self.regions)

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

        if self.style is not None:
            return dataclasses.replace(self, style=styles[find_style(list(styles),
                                                                     self.style)].id)
        if self.blend:
            merged: dict[str, float] = {}
            for sid, w in self.blend:
                key = styles[find_style(list(styles), sid)].id
                merged[key] = merged.get(key, 0.0) + w
            return dataclasses.replace(self, blend=tuple(sorted(merged.items())))
        return self

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
            params["regions"] = dict(self.regions)
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
                   regions=params.get("regions"))

    def batch_key(self) -> tuple:
        """Pack requests with equal keys can run as one engine batch."""
        return (self.kind, self.style, self.blend, self.strength, self.keep_colors,
                self.stroke, self.media, self.refine)
