"""One preprocessing for every network in bodymap.models: a photo array checked and made RGB
uint8 (``as_rgb``), squared images resized to a network's input (``fit_size``), and uint8 pixels
scaled and normalised into the (N, 3, H, W) float tensor a network takes (``normalise`` for a
torch tensor, ``to_tensor`` for a numpy array), and a network run over many images in
batches without gradients (``predict_batched``). A checkpoint's "normalisation" entry is
{"mean": [3], "std": [3]} on 0..1 RGB, optionally with "scale" (255 when absent) and
"shades_of_gray" (the Minkowski norm p of a colour constancy applied before the normalisation).
"""
from __future__ import annotations

import numpy as np


def as_rgb(image, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 from a photo array (grey (H, W), RGB or RGBA; uint8 or float in [0, 1]).
    ValueError names ``name`` for empty, tiny or oddly shaped input."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"{name}: expected an (H, W, 3) colour image, got shape {a.shape}")
    if a.shape[0] < 16 or a.shape[1] < 16:
        raise ValueError(f"{name}: image is {a.shape[1]}x{a.shape[0]} pixels; at least 16x16 needed")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: image has NaN or infinite values")
        a = np.clip(a * 255.0 if a.max() <= 1.0 else a, 0, 255).astype(np.uint8)
    if a.max() == a.min():
        raise ValueError(f"{name}: image is one flat colour (empty photo?)")
    return a


def fit_size(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3) uint8 (PIL bilinear); returned as is when S == size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


def shades_of_gray(x, p: float = 6.0):
    """Colour constancy of a float batch (N, 3, H, W) in 0..1: each image's illuminant is the
    Minkowski p-norm mean of each channel (p = 1 grey world, p = inf white patch), and the
    channels are scaled so that it becomes grey (Finlayson & Trezzi 2004). Dermoscopes and
    cameras differ most in their light's colour; this takes the cast out before a network sees it."""
    e = x.clamp_min(0).pow(p).mean((2, 3), keepdim=True).pow(1.0 / p)  # (N, 3, 1, 1)
    gain = e.mean(1, keepdim=True) / e.clamp_min(1e-4)
    return (x * gain).clamp(0, 1)


def unit_rgb(u8, normalisation: dict):
    """uint8 torch tensor (N, H, W, 3) -> float32 tensor (N, 3, H, W) in 0..1: x / scale, then
    the colour constancy when the normalisation names one ("shades_of_gray": p). The first half
    of ``normalise``; an augmentation works between the two."""
    x = u8.permute(0, 3, 1, 2).float() / float(normalisation.get("scale", 255.0))
    if normalisation.get("shades_of_gray"):
        x = shades_of_gray(x, float(normalisation["shades_of_gray"]))
    return x


def standardise(x, normalisation: dict):
    """float tensor (N, 3, H, W) in 0..1 -> (x - mean) / std per channel. The second half of
    ``normalise``."""
    import torch

    mean = torch.tensor(normalisation["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalisation["std"], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise(u8, normalisation: dict):
    """uint8 torch tensor (N, H, W, 3) -> normalised float32 tensor (N, 3, H, W):
    (x / scale - mean) / std per channel, after the colour constancy when the normalisation
    names one ("shades_of_gray": p)."""
    return standardise(unit_rgb(u8, normalisation), normalisation)


def to_tensor(images: np.ndarray, normalisation: dict):
    """(N, H, W, 3) uint8 numpy images -> normalised float32 torch tensor (N, 3, H, W)."""
    import torch

    return normalise(torch.as_tensor(np.require(images, requirements=["C", "W"])), normalisation)


def predict_batched(model, images: np.ndarray, normalisation: dict, reduce, batch: int = 32, device=None,
                    empty: np.ndarray | None = None) -> np.ndarray:
    """A network on (N, H, W, 3) uint8 images of its input size, ``batch`` at a time, without
    gradients: each batch normalised (``to_tensor``), moved to ``device``, its output reduced by
    ``reduce`` (a torch function: softmax, argmax over classes) and brought back to numpy;
    the batches concatenated along the first axis. ``empty`` is returned for N = 0."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_tensor(images[i:i + batch], normalisation)
            if device is not None:
                x = x.to(device)
            out.append(reduce(model(x)).cpu().numpy())
    if not out:
        if empty is None:
            raise ValueError("no images to predict")
        return empty
    return np.concatenate(out)
