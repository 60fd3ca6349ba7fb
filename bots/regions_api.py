"""A read-only preview of a photo's region for the web page: `POST /api/v1/regions/preview`.

The page shows where a "person only" / "background only" / "clothing only" / "keep faces"
choice would put the style before anything is submitted: it posts the photo and the region
and draws the answer, a grey PNG mask (white = in the region) at most `PREVIEW_SIDE` pixels
long, as a translucent overlay that the user may then paint on. Nothing is stored; the call
spends one token of the same per-user rate limit as a job submission, and at most
`PREVIEW_CONCURRENCY` masks are computed at once (the segmenter runs on the CPU).

The masks are `stylejax.regions`' own (the ones the workers compose with), computed on the
photo decoded at `PREVIEW_SIDE` with the service's upload limits.
"""

import io
import threading
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import Response

from stylejax.errors import RateLimitedError
from stylejax.imageio import decode_image
from stylejax.request import region_name

from .http_api import API, ApiError, ApiUser, Service, _read_upload

PREVIEW_SIDE = 512
PREVIEW_CONCURRENCY = 2
# the regions a preview can show (the page's choices); "mask" is the user's own
PREVIEW_REGIONS = ("person", "background", "clothing", "face", "sky")
REGION_FIELD = ("The region to show: person, background, clothing, face (or faces), sky.")

_busy = threading.BoundedSemaphore(PREVIEW_CONCURRENCY)


def region_mask_png(rgb: np.ndarray, region: str) -> tuple[bytes, float]:
    """The region's soft mask of an RGB uint8 picture as a grey PNG, and its mean (0..1)."""
    from PIL import Image

    from stylejax import regions as rg

    mask = rg.region_masks(rgb, (region,))[region]
    grey = np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, "PNG", optimize=False)
    return buf.getvalue(), float(mask.mean())


def regions_router() -> APIRouter:
    """`POST /api/v1/regions/preview`: multipart `image` + `region` → image/png mask."""
    router = APIRouter(prefix=f"{API}/regions")

    @router.post("/preview", responses={200: {"content": {"image/png": {}}}})
    def preview(image: Annotated[UploadFile, File()], user: ApiUser, service: Service,
                region: Annotated[str, Form(description=REGION_FIELD)]):
        name = region_name(region, keep=True)  # "faces" → "face"; unknown: a 422 that says why
        if name not in PREVIEW_REGIONS:
            raise ApiError(422, f"No preview for the region {name!r}; choose from "
                                f"{', '.join(PREVIEW_REGIONS)}.")
        wait = service.rate.try_acquire(f"user:{user.id}")
        if wait:
            raise RateLimitedError(max(1, round(wait + 0.5)))
        data = _read_upload(image, service.settings.max_upload_bytes, "photo")
        rgb = decode_image(data, limits=service.limits, allow_animated=False,
                           max_side=PREVIEW_SIDE).rgb
        if not _busy.acquire(timeout=20):
            raise ApiError(503, "Too many previews at once; please try again in a moment.",
                           {"Retry-After": "5"})
        try:
            png, coverage = region_mask_png(rgb, name)
        finally:
            _busy.release()
        return Response(png, media_type="image/png", headers={
            "Cache-Control": "no-store", "X-Region": name,
            "X-Region-Coverage": f"{coverage:.4f}",
            "Access-Control-Expose-Headers": "X-Region, X-Region-Coverage"})

    return router
