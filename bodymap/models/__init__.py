"""Learned models: diagnosis (A: image, B: image + anatomic site), ear segmentation, macro-anatomy
classifier; their checkpoints (one file each, ``checkpoint.py``), metrics (``metrics.py``) and the
photo quality check (``quality.py``). torch and timm are imported inside the functions that need
them, so ``import bodymap.models`` stays cheap.
"""
