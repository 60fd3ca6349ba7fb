"""Issue 17, finding 2: memory per upload.

A small PNG can declare a huge picture (a 7071×7071 flat image is ~150 kB): the API process
used to decode each upload at full size plus several full-size copies (~600 MB each), so 8 at
once took it past 4 GB. Now the front end decodes at `max_side`, `decode_concurrency` at a
time. Measured on the real `stylejax serve --workers 0` process: its peak resident memory
(VmHWM) over 8 concurrent uploads.
"""

from __future__ import annotations

import io
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from service_process import Server, post_photo  # noqa: E402

SIDE = 7071  # just under the 50 MP limit
UPLOADS = 8
# The bound on the rise of the API process's peak memory. Measured (2-core machine): +490 MB
# with the bounded decode (2 at a time), +4,360 MB before it.
BOUND_MB = 1000


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def large_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((SIDE, SIDE, 3), (90, 140, 200), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_concurrent_large_uploads_keep_the_api_process_small(tmp_path, large_png):
    assert len(large_png) < 300_000  # tiny file, huge picture
    server = Server(tmp_path, workers=0, STYLEJAX_MAX_SIDE="2048",
                    STYLEJAX_MAX_UPLOAD_BYTES="20000000", STYLEJAX_RATE_BURST="50",
                    STYLEJAX_MAX_ACTIVE_JOBS="50")
    try:
        pid = server.proc.pid
        style = server.client.get("/api/v1/styles").json()[0]["id"]
        before = _status_mb(pid, "VmRSS")

        def upload(_i: int) -> int:
            with httpx.Client(base_url=server.base, timeout=180) as client:
                return post_photo(client, large_png, style=style).status_code

        with ThreadPoolExecutor(UPLOADS) as pool:
            codes = list(pool.map(upload, range(UPLOADS)))
        peak = _status_mb(pid, "VmHWM")
        print(f"API process: {before:.0f} MB before, peak {peak:.0f} MB "
              f"(+{peak - before:.0f} MB) for {UPLOADS} uploads of {SIDE}×{SIDE}")
        assert codes == [202] * UPLOADS, server.log()[-3000:]
        assert peak - before < BOUND_MB, f"peak rose by {peak - before:.0f} MB"
        # the stored picture is the user's file, byte for byte
        stored = list((server.data_dir / "blobs").rglob("*"))
        assert any(p.is_file() and p.read_bytes() == large_png for p in stored)
    finally:
        server.stop()


def _jpeg(w: int, h: int, orientation: int | None = None) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], -1)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "P", "RGBA"])
def test_decoding_at_max_side_matches_a_full_decode_scaled_down(fmt):
    """What the API checks and the worker uses: the same picture as a full decode scaled down,
    EXIF rotation included; the size limits still apply to the full size."""
    from stylejax.errors import ImageTooSmallError
    from stylejax.imageio import decode_image, resize_max_side

    data = _jpeg(3000, 1400, orientation=6)
    if fmt != "JPEG":
        im = Image.open(io.BytesIO(data))
        im = im.convert("P") if fmt == "P" else im.convert(fmt if fmt != "PNG" else "RGB")
        buf = io.BytesIO()
        im.save(buf, "PNG", exif=Image.open(io.BytesIO(data)).getexif().tobytes())
        data = buf.getvalue()
    full = decode_image(data)
    small = decode_image(data, max_side=500)
    assert full.exif_rotated and small.exif_rotated
    assert full.rgb.shape == (3000, 1400, 3)
    expected = resize_max_side(full.rgb, 500)
    assert small.rgb.shape == expected.shape == (500, 233, 3)
    diff = np.abs(small.rgb.astype(int) - expected.astype(int))
    assert diff.mean() < 3.0, diff.mean()
    thin = _jpeg(3000, 20)
    assert decode_image(thin, max_side=100).rgb.shape == (1, 100, 3)  # limits: full size
    with pytest.raises(ImageTooSmallError):
        decode_image(_jpeg(3000, 12), max_side=100)
