"""BodyMap: 3D total-body skin-lesion mapping.

The core library never imports Qt. Heavy optional imports (torch, anny) happen inside the
functions that need them, so ``import bodymap`` stays fast.
"""
from bodymap.scan import Scan, ScanError, ScanMeta

__version__ = "0.1.0"
__all__ = ["Scan", "ScanError", "ScanMeta", "__version__"]
