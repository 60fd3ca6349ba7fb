"""Typed errors whose messages are safe and friendly enough to show to a user as they are.

Front ends catch `StyleJAXError` and show `str(err)`; anything else is a bug and gets a generic
message. Keep messages short, concrete and free of paths or internals.
"""

from __future__ import annotations


class StyleJAXError(Exception):
    """Base of every error a user may see."""


class NotAnImageError(StyleJAXError):
    """The bytes are not a picture we can read."""


class ImageTooLargeError(StyleJAXError):
    """The picture exceeds a pixel, dimension or byte limit."""


class ImageTooSmallError(StyleJAXError):
    """The picture is below the minimum side length (too few pixels to stylise)."""


class CorruptImageError(StyleJAXError):
    """The file claims to be a picture but cannot be decoded (truncated, damaged)."""


class UnsupportedImageError(StyleJAXError):
    """A real picture in a form we do not handle (e.g. an animation when one frame is needed)."""


class WeightsError(StyleJAXError):
    """A weights file or style pack is missing, damaged or does not match the network."""


class UnknownStyleError(StyleJAXError):
    """The requested style id is not in the pack."""


class InvalidRequestError(StyleJAXError, ValueError):
    """A parameter out of range (strength, blend weights, sizes): the user can fix it."""
