"""Region composition: a style per region of a photo, blended in pixel space (issue 16).

`Stylizer.run_many` calls this for a request with `regions` (stylejax.request.RegionSpec) or a
user-given mask: the photo is stylised once per distinct style (whole, one engine batch), the
region masks are computed once per photo (stylejax.regions), and the results are blended:

    out = photo + Σᵢ wᵢ · sᵢ · (styledᵢ − photo)

with sᵢ the region's strength and wᵢ its weight map. The weights are *layered by capacity*:
the kept regions (`keep`) take their share first (K), then the regions from the most specific
to the most general (mask > face > clothing > person > sky > background > everywhere,
`request.REGION_NAMES` reversed), each taking as much of its mask as is still free:

    wᵢ = min(mᵢ, 1 − K − Σ wⱼ over the more specific regions j)

so Σ wᵢ ≤ 1 at every pixel and the photo shows with weight 1 − Σ wᵢ where no region applies.
"everywhere=starry, person=wave" is a Starry Night picture with a Great Wave person, whatever
order the regions were given in; "person=wave" inside soft clothing of 0.6 gets 0.4. The min
(not an "over" product mᵢ · (1 − Σ wⱼ)) matters on soft borders between *disjoint* regions:
person 0.5 / background 0.5 must give 0.5 + 0.5, where a product would give 0.5 + 0.25 and let
a quarter of the unstyled photo show through as a pale fringe along the outline.

**Why this does not halo.** A halo at a region border comes from one of three things: (1) a
style computed on a cut-out (the network sees zero or padded pixels past the cut and paints a
dark or bright rim along it), (2) a mask edge that is not on the object's edge (a band of
background style on the person, or of the photo beside a stylised person), (3) a hard 0/1 cut
(a jagged line). Here (1) cannot happen: each style is rendered on the *whole* photo, so on
both sides of a border each result is an ordinary stylisation of the real pixels there, with
its instance-norm statistics from the whole picture, and blending two such images only chooses
between them. (2) is what the guided filter in `regions.refine` is for: the soft masks' steps
sit on the photo's own colour edges (hair strands, the outline of a shoulder), so the switch
from one style to the other happens where the picture changes anyway; only in the few pixels
where the segmenter is wrong does a style spill, and that is a wrong mask, not a halo. (3) the
masks are soft, and `feather` widens the transition further on request (a Gaussian of σ =
radius / 2, so the ramp spans about ± radius). Because the mask enters as a per-pixel strength
(the formula above), a soft edge is a ramp of strength, never a mix of two unrelated textures
at fixed opacity beyond the border band. docs/regions.md shows crops at full size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InvalidRequestError, RegionNotFoundError
from .request import REGION_NAMES, RegionSpec, RegionStyle

# Masks are computed on the photo at most this long (then upsampled): the guided filter fits its
# coefficients at ≤ 320 px anyway, and face tiles at 4000 px cost seconds for nothing.
MASK_SIDE = 1536
# A styled region covering less than this share of the picture counts as "not found".
MIN_AREA = 0.002

_AUTOMATIC = {"person", "background", "sky", "clothing", "face"}
# What a user is told when a styled region is not in the photo (bots/i18n.py translates it).
NOT_FOUND = {
    "person": "No person found in this photo, so there is no person to style. Style the "
              "whole photo, or the background or sky, instead.",
    "clothing": "No clothing found in this photo: clothing is found on a person whose face is "
                "visible. Style the person or the whole photo instead.",
    "face": "No face found in this photo, so there is no face to style.",
    "sky": "No sky found in this photo (blue or overcast daytime skies are recognised). Style "
           "the background instead.",
    "background": "The person fills the whole photo: there is no background to style.",
    "mask": "The mask is black everywhere: nothing to style. White areas get the style.",
}


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """A Gaussian blur of σ = radius / 2 (the 0→1 ramp then spans about ± radius pixels)."""
    if radius <= 0:
        return mask
    import cv2

    sigma = radius / 2.0
    k = 2 * int(np.ceil(3 * sigma)) + 1
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (k, k), sigma,
                                    borderType=cv2.BORDER_REFLECT), 0.0, 1.0)


def layer_weights(masks: Sequence[tuple[str, np.ndarray]],
                  keep: np.ndarray | None = None) -> list[np.ndarray]:
    """Per-region weight maps from soft masks: `keep` first, then from the most specific
    region to the most general (`REGION_NAMES` reversed), wᵢ = min(mᵢ, what is still free).
    Σ wᵢ ≤ 1 − K everywhere; disjoint soft masks that sum to 1 keep their values. Returned in
    the input's order."""
    if not masks:
        return []
    free = np.ones_like(masks[0][1], dtype=np.float32) if keep is None else \
        (1.0 - np.clip(keep, 0.0, 1.0)).astype(np.float32)
    order = sorted(range(len(masks)), key=lambda i: REGION_NAMES.index(masks[i][0]),
                   reverse=True)
    weights: list[np.ndarray | None] = [None] * len(masks)
    for i in order:
        w = np.minimum(np.clip(masks[i][1], 0.0, 1.0), free)
        weights[i] = w.astype(np.float32)
        free = np.maximum(free - w, 0.0)
    return weights  # type: ignore[return-value]


def blend(photo: np.ndarray, styled: Sequence[np.ndarray], weights: Sequence[np.ndarray],
          strengths: Sequence[float]) -> np.ndarray:
    """photo + Σ wᵢ sᵢ (styledᵢ − photo), float H×W×3 in [0, 1]."""
    out = np.asarray(photo, np.float32).copy()
    for y, w, s in zip(styled, weights, strengths):
        out += (s * w)[..., None] * (np.asarray(y, np.float32) - photo)
    return np.clip(out, 0.0, 1.0)


def _resize_mask(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if m.shape == shape:
        return m
    import cv2

    return np.clip(cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR), 0, 1)


def region_masks(spec: RegionSpec, photo: np.ndarray,
                 user_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every mask the spec styles or keeps, H×W float32 in [0, 1] at the photo's size (soft,
    refined; not yet feathered). `user_mask` (H×W or H×W×1) is the "mask" region."""
    from . import regions as rg

    names = {e.region for e in spec.entries} | set(spec.keep)
    h, w = photo.shape[:2]
    out: dict[str, np.ndarray] = {}
    if "everywhere" in names:
        out["everywhere"] = np.ones((h, w), np.float32)
    if "mask" in names:
        if user_mask is None:
            raise InvalidRequestError("This request styles a hand-made mask; give the mask "
                                      "with the photo.")
        out["mask"] = _resize_mask(np.asarray(user_mask, np.float32).reshape(h, w), (h, w))
    auto = [n for n in rg.REGIONS if n in names & _AUTOMATIC]
    if auto:
        small = photo
        scale = MASK_SIDE / max(h, w)
        if scale < 1:
            import cv2

            small = cv2.resize(np.asarray(photo, np.float32),
                               (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        for name, m in rg.region_masks(small, auto).items():
            out[name] = _resize_mask(m, (h, w))
    return out


def region_weights(spec: RegionSpec, photo: np.ndarray, user_mask: np.ndarray | None = None,
                   masks: Mapping[str, np.ndarray] | None = None,
                   ) -> list[tuple[RegionStyle, np.ndarray]]:
    """Each styled region with its weight map (feathered, layered, kept regions removed).

    `masks`: every mask the spec names, already made at the photo's size (a front end that
    caches them per photo, like the notebook widget); None: `region_masks` makes them here.
    RegionNotFoundError when a styled region is (nearly) empty in this photo: a user asking for
    "person only" on a landscape should read why, not get the photo back unchanged.
    """
    if masks is None:
        masks = region_masks(spec, photo, user_mask)
    for e in spec.entries:
        if float(masks[e.region].mean()) < MIN_AREA:
            raise RegionNotFoundError(NOT_FOUND.get(e.region, f"No {e.region} found."))
    styled = [(e.region, feather(masks[e.region], spec.feather)) for e in spec.entries]
    keep = None
    for k in spec.keep:
        m = feather(masks[k], spec.feather)
        keep = m if keep is None else np.maximum(keep, m)
    return list(zip(spec.entries, layer_weights(styled, keep)))


def compose(photo: np.ndarray, spec: RegionSpec, styled: Mapping[str | None, np.ndarray],
            strength: float, user_mask: np.ndarray | None = None,
            masks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The composed picture: `styled` maps each entry's style (None: the request's own) to the
    photo stylised in it at full strength; `strength` is the request's, for entries without
    their own. `masks` as in `region_weights`."""
    pairs = region_weights(spec, photo, user_mask, masks)
    return blend(photo, [styled[e.style] for e, _ in pairs], [w for _, w in pairs],
                 [strength if e.strength is None else e.strength for e, _ in pairs])
