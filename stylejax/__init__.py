"""StyleJAX: photo style transfer with JAX/Flax — feature net, generator, engine, custom styles."""

from .errors import StyleJAXError
from .request import StyleRequest

__all__ = ["StyleJAXError", "StyleRequest", "Stylizer"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: `python -m stylejax.features` must not import the features module twice.
    if name == "Stylizer":
        from .stylizer import Stylizer

        return Stylizer
    raise AttributeError(name)
