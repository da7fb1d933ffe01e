"""IAUnet edge toolkit: one import package.

``iaunet.core`` is the dependency-free base; the stages ``iaunet.train``,
``iaunet.export``, ``iaunet.calib``, ``iaunet.engines`` and ``iaunet.runtime`` (the
repository's top-level folders) build on it in that order; ``iaunet.cli`` (the
``iaunet`` command), ``iaunet.demo`` and ``iaunet.doctor`` sit on top. Importing
``iaunet`` itself needs the standard library alone.
"""
from iaunet.core.errors import IAUnetError

__version__ = "0.1.0"
__all__ = ["IAUnetError", "__version__"]
