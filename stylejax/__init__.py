"""StyleJAX: photo style transfer with JAX/Flax — feature net, generator, engine, custom styles."""

from .errors import StyleJAXError
from .stylizer import Stylizer

__all__ = ["Stylizer", "StyleJAXError"]
__version__ = "0.1.0"
