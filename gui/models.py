"""The models of the GUI's panels (photo quality, photo kind, macro region, ear locator, ear
segmentation, diagnosis): bodymap.photo's loader, the one the CLI uses (lazy, cached, thread
safe; call from a worker: it imports torch on first use). When the package or a checkpoint is
missing, the panels say "model not available" with the reason (ModelUnavailable) instead of
failing."""
from __future__ import annotations

from bodymap import photo as _photo
from bodymap.photo import MODELS as KINDS  # noqa: F401  (kind -> (module, class or function))
from bodymap.photo import ModelUnavailable  # noqa: F401


def get(kind: str):
    """The loaded model of a kind (bodymap.photo.load_model; for 'quality' the check_photo
    function). Raises ModelUnavailable."""
    return _photo.load_model(kind)


def module(kind: str):
    """The module of a kind (bodymap.photo.model_module: earseg.overlay, diagnosis.lesion_crop)."""
    return _photo.model_module(kind)


def clear() -> None:
    """Forget loaded models (bodymap.photo.clear_models; tests swap fakes in)."""
    _photo.clear_models()
