"""The former home of :mod:`collectors.opcua.security`, kept so that importers not yet
moved to the package keep working; new code imports ``collectors.opcua.security``."""

from collectors.opcua.security import *  # noqa: F403
from collectors.opcua.security import __all__ as __all__
