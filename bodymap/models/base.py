"""What every loaded model shares: ``LoadedModel.load(path, device)`` reads a BodyMap checkpoint
of the class's task (``checkpoint.load_checkpoint``: errors name the file), builds the network
its "arch" entry describes, loads the weights, puts it on the device (a GPU when present, else
the CPU) in eval mode, and keeps the checkpoint as ``info``. ``card`` is what a user is shown
with every prediction: the model's name, its file, what it was trained on (and that data's
licence) and its held-out scores.

A subclass sets TASK, DEFAULT_PATH, NAME and TRAINED_ON, and defines ``build(checkpoint)`` and
``held_out_line()``.
"""
from __future__ import annotations

from pathlib import Path

from bodymap.models.checkpoint import CheckpointError, load_checkpoint, pick_device


class LoadedModel:
    """A checkpoint loaded for inference. Attributes: model (torch module, eval mode, on
    ``device``), info (the checkpoint dict, weights included), path (Path or None when made in
    memory), classes (list of names), input_size (int, pixels), normalisation (dict), device."""

    TASK = ""
    DEFAULT_PATH: Path | None = None
    NAMED: dict = {}  # shipped checkpoints by name ("image_only" -> its file)
    NAME = ""
    TRAINED_ON = "?"  # shown when the checkpoint's data has no "name"

    def __init__(self, checkpoint: dict, device=None, model=None):
        """checkpoint: as load_checkpoint returns it (at least classes, input_size and
        normalisation; arch and state_dict unless ``model``, an already trained module, is given)."""
        self.info = checkpoint
        p = checkpoint.get("path")
        self.path = Path(p) if p else None
        self.classes = list(checkpoint.get("classes", []))
        self.input_size = int(checkpoint["input_size"])
        self.normalisation = dict(checkpoint["normalisation"])
        self.device = pick_device(None if device is None else str(device))
        if model is None:
            model = self.build(checkpoint)
            try:
                model.load_state_dict(checkpoint["state_dict"])
            except RuntimeError as e:
                raise CheckpointError(p or "checkpoint",
                                      f"weights do not fit its architecture ({str(e)[:200]})") from None
        self.model = model.to(self.device).eval()

    @classmethod
    def build(cls, checkpoint: dict):
        """The network of ``checkpoint["arch"]`` with random weights."""
        raise NotImplementedError

    @classmethod
    def load(cls, path=None, device=None):
        """Load a checkpoint: a file, a shipped name (``NAMED``) or None (``DEFAULT_PATH``), on
        ``device`` (default: a GPU when present, else the CPU). CheckpointError names the file if
        it is missing, not a BodyMap checkpoint, one for another task or one whose weights do
        not fit."""
        if path is None:
            path = cls.DEFAULT_PATH
        elif str(path) in cls.NAMED:
            path = cls.NAMED[str(path)]
        return cls(load_checkpoint(path, cls.TASK), device)

    def held_out_line(self) -> str:
        """One line of held-out scores from the checkpoint's metrics ("" when it has none)."""
        return ""

    @property
    def card(self) -> dict:
        """{"name", "file", "trained_on", "licence", "held_out"}: shown with every prediction."""
        data = self.info.get("data") or {}
        return {"name": self.NAME, "file": self.path.name if self.path else None,
                "trained_on": data.get("name", self.TRAINED_ON), "licence": data.get("licence"),
                "held_out": self.held_out_line()}
