"""IAUnet edge toolkit: the shared, dependency-free core (version, errors, logging).

Every stage package (train, export, calib, engines, runtime) imports this; it must
stay importable with the standard library alone.
"""
from iaunet.core.errors import IAUnetError

__version__ = "0.1.0"
__all__ = ["IAUnetError", "__version__"]
