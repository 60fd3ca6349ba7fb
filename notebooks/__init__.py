"""ipywidgets front end and demo notebooks.

    from notebooks import widget
    w = widget("photo.jpg")   # a StylizeWidget; shows itself as a cell's last expression

Importing this package needs ipywidgets (`pip install stylejax[notebook]`); the library
(`stylejax/`) never imports it.
"""

from .widget import CUSTOM, StylizeWidget, widget

__all__ = ["CUSTOM", "StylizeWidget", "widget"]
