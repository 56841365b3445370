"""Old home of ``bodymap.anatomy.poses`` (the body model moved next to registration, which depends on
it). This module IS that module (the same object in sys.modules), so old imports and attribute
assignments (``notice``) keep working."""
import sys

from bodymap.anatomy import poses as _m

sys.modules[__name__] = _m
