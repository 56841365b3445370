"""The models (bodymap.models: photo quality, photo kind, macro region, ear locator, ear
segmentation, diagnosis), loaded lazily in worker threads and cached. When the package or a
checkpoint is missing, the panels say "model not available" with the reason instead of
failing. Photo mode passes ``get`` to bodymap.photo.analyse_photo (the CLI uses the library's
own loader, bodymap.photo.load_model: the same models)."""
from __future__ import annotations

import importlib
import threading

_cache: dict[str, object] = {}
_lock = threading.Lock()

# kind -> (module, class or function name)
KINDS = {
    "quality": ("bodymap.models.quality", "check_photo"),
    "kind": ("bodymap.models.photokind", "PhotoKindClassifier"),
    "macro": ("bodymap.models.macro", "MacroClassifier"),
    "earfind": ("bodymap.models.earfind", "EarLocator"),
    "earseg": ("bodymap.models.earseg", "EarSegmenter"),
    "diagnosis": ("bodymap.models.diagnosis", "DiagnosisModel"),
}


class ModelUnavailable(Exception):
    """The model cannot be used here; str() says why (shown in the panel)."""


def get(kind: str):
    """The loaded model of a kind (a class's .load() result; for 'quality' the check_photo
    function). Imports torch on first use: call from a worker thread. Raises ModelUnavailable."""
    with _lock:
        if kind in _cache:
            return _cache[kind]
        mod_name, attr = KINDS[kind]
        try:
            mod = importlib.import_module(mod_name)
            obj = getattr(mod, attr)
        except (ImportError, AttributeError) as e:
            raise ModelUnavailable(f"model not available ({mod_name} is not installed: {e})") from None
        if kind != "quality":
            try:
                obj = obj.load()
            except Exception as e:  # CheckpointError, a missing file, a foreign checkpoint
                raise ModelUnavailable(f"model not available ({type(e).__name__}: {e})") from None
        _cache[kind] = obj
        return obj


def module(kind: str):
    """The module of a kind (for helpers such as earseg.overlay or diagnosis.lesion_crop)."""
    try:
        return importlib.import_module(KINDS[kind][0])
    except ImportError as e:
        raise ModelUnavailable(f"model not available ({e})") from None


def clear() -> None:
    """Forget loaded models (tests swap fakes in)."""
    with _lock:
        _cache.clear()
