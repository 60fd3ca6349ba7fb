"""Stroke size: how big the style's texture is relative to the picture, not in pixels.

A generator or a Gram loss paints texture at a fixed size in pixels, so without this a 2,000-px
photo gets tiny strokes and a 300-px photo broad ones. Every path therefore works at a scale
set by the stroke size alone and resizes to the output: the pack's generator runs at a working
long side, the custom-style optimiser views the style picture at a size relative to the result.
"""

from __future__ import annotations

from .errors import InvalidRequestError, echo

STROKES: dict[str, float] = {"small": 0.6, "medium": 1.0, "large": 1.6}
MIN_STROKE, MAX_STROKE = 0.25, 4.0
# Long side at which the pack's generator paints "medium" strokes (docs/quality.md).
PACK_WORK_SIDE = 640


def parse_stroke(value: str | float | int | None) -> float:
    """'small' | 'medium' | 'large' or a factor (1 = medium, 2 = strokes twice as big)."""
    if value is None:
        return 1.0
    if isinstance(value, str):
        key = value.strip().lower()
        if key in STROKES:
            return STROKES[key]
        try:
            value = float(key)
        except ValueError:
            raise InvalidRequestError(
                f"Stroke size must be small, medium, large or a number from {MIN_STROKE} to "
                f"{MAX_STROKE}, got {echo(value)!r}.") from None
    v = float(value)
    if not MIN_STROKE <= v <= MAX_STROKE:  # also rejects NaN
        raise InvalidRequestError(
            f"Stroke size must be between {MIN_STROKE} and {MAX_STROKE}, got {value}.")
    return v


def stroke_name(value: float) -> str:
    """The preset a factor stands for, or the number itself (for captions and settings)."""
    for name, v in STROKES.items():
        if abs(v - value) < 1e-6:
            return name
    return f"{value:g}"


def work_side(stroke: float, medium: int = PACK_WORK_SIDE) -> int:
    """Long side a generator runs at: bigger strokes = a smaller canvas, upscaled. `medium` is
    the generator's own side for medium strokes (the pack's, or an any-style model's)."""
    return max(64, round(medium / stroke / 4) * 4)


def pack_work_side(stroke: float) -> int:
    """Long side the pack's generator runs at."""
    return work_side(stroke, PACK_WORK_SIDE)
