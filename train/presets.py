"""Named MLP topologies and their training hyperparameters.

All presets read 28x28 images (784 pixels) and output 10 classes. ``hidden`` lists the hidden
layer widths: ``seed000`` is the 784-512-10 network of seed 000; ``tfc``, ``sfc`` and ``lfc``
are the FINN / BNN-PYNQ fully connected networks with three hidden layers of 64, 256 and 1024
neurons.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A topology and the hyperparameters it trains with.

    Attributes
    ----------
    hidden : tuple of int
        Hidden layer widths.
    batch_size : int
    lr, lr_end : float
        Adam learning rate of the first and of the last epoch (geometric decay in between).
    dropout_input, dropout_hidden : float
        Dropout rates before the first and before every later dense layer (training only).
    loss : str
        ``"cross-entropy"`` or ``"squared-hinge"``.
    input_threshold : float
        Default fixed input threshold of the binary-input modes.
    """

    hidden: tuple[int, ...]
    batch_size: int = 100
    lr: float = 3e-2
    lr_end: float = 3e-4
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    loss: str = "cross-entropy"
    input_threshold: float = 127.5


PRESETS: dict[str, Preset] = {
    "seed000": Preset(hidden=(512,), dropout_input=0.1, dropout_hidden=0.2),
    "tfc": Preset(hidden=(64, 64, 64)),
    "sfc": Preset(hidden=(256, 256, 256), dropout_input=0.1, dropout_hidden=0.2),
    "lfc": Preset(hidden=(1024, 1024, 1024), dropout_input=0.2, dropout_hidden=0.3),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` naming the value and the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
