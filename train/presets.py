"""Named topologies and their training hyperparameters.

All presets read 28x28 images (784 pixels) and output 10 classes. ``hidden`` lists the hidden
dense layer widths: ``seed000`` is the 784-512-10 network of seed 000; ``tfc``, ``sfc`` and
``lfc`` are the FINN / BNN-PYNQ fully connected networks with three hidden layers of 64, 256 and
1024 neurons.

Presets with ``conv`` are binarized CNNs (:class:`bnnhw.train.conv.CNN`, W1A1 only): 3x3 binary
convolutions, stride 1, no padding, each followed by batch norm, an optional 2x2 max-pool and
sign, then the dense layers.

``cbcnn`` follows seed 003 (CBCNN) on MNIST as far as the paper states it: "Binary Block 1" (3x3
binary conv, 2x2 max-pool, batch norm), "Binary Block 2" (binary dense, batch norm), Adam, squared
hinge loss, mini-batches of 50. The paper's learning rate, 1e-3 to 1e-4, is spread over 500 epochs;
over the few epochs a numpy run affords it barely flips the latent weights (5 epochs: 88.89 % on
MNIST), so the preset uses the MLP presets' 3e-2 to 3e-4. The block count and widths are not in the
text (they are in its Figure 2); assumed here: three conv blocks of 128 channels, one dense block of
256. Differences: valid convolutions (the model format has no padding), so the maps go
28-26-13-11-5-3-1 and the weights are 0.33 M bits instead of the paper's 0.48 M parameters; the pool
comes after the batch norm (see :mod:`bnnhw.train.conv`); the input is binarized at 127.5 instead of
real-valued unless ``input_kind="pixels8"`` (the first conv then reads the 8-bit pixels).
``cbcnn-wide`` keeps the CBCNN pattern (binary 3x3 conv blocks, each with batch norm and a 2x2
max-pool, then binary dense blocks) with two conv blocks of 64 and 128 channels and a dense
block of 512: its maps go 28-26-13-11-5, so the dense layers see 5x5x128 = 3,200 bits instead of
``cbcnn``'s 1x1x128 (its third pool keeps one of the nine positions of a 3x3 map). It is the
Fashion-MNIST network. ``cbcnn-small`` has the same shape with 32 and 64 channels and a dense
block of 256: 0.43 M weights, near the 0.48 M trainable parameters seed 003 gives for CBCNN.
``cbcnn-deep`` doubles the conv blocks of ``cbcnn-wide``: 64, 64 (pool), 128, 128 (pool)
channels, maps 28-26-24-12-10-8-4, then a dense block of 512 on 4x4x128 = 2,048 bits; it is the
deeper variant for Fashion-MNIST, where ``cbcnn-wide`` stops at 91.5 % training accuracy.
``cnv-tiny`` (16 and 32 channels, dense 64) trains in a couple of minutes. ``cnv-micro`` (4 and
8 channels, dense 32) is the smallest CNN, sized for quick simulations of the generated Verilog.
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
    conv : tuple of (int, bool)
        Binarized CNN only: output channels and "2x2 max-pool after" of each conv block; empty
        for an MLP.
    kernel : int
        Convolution kernel size.
    """

    hidden: tuple[int, ...]
    batch_size: int = 100
    lr: float = 3e-2
    lr_end: float = 3e-4
    dropout_input: float = 0.0
    dropout_hidden: float = 0.0
    loss: str = "cross-entropy"
    input_threshold: float = 127.5
    conv: tuple[tuple[int, bool], ...] = ()
    kernel: int = 3


PRESETS: dict[str, Preset] = {
    "seed000": Preset(hidden=(512,), dropout_input=0.1, dropout_hidden=0.2),
    "tfc": Preset(hidden=(64, 64, 64)),
    "sfc": Preset(hidden=(256, 256, 256), dropout_input=0.1, dropout_hidden=0.2),
    "lfc": Preset(hidden=(1024, 1024, 1024), dropout_input=0.2, dropout_hidden=0.3),
    "cbcnn": Preset(hidden=(256,), conv=((128, True), (128, True), (128, True)), batch_size=50,
                    loss="squared-hinge"),
    "cbcnn-wide": Preset(hidden=(512,), conv=((64, True), (128, True)), batch_size=50, lr=1e-2,
                         lr_end=1e-4),
    "cbcnn-deep": Preset(hidden=(512,), conv=((64, False), (64, True), (128, False), (128, True)),
                         batch_size=50, lr=1e-2, lr_end=1e-4),
    "cbcnn-small": Preset(hidden=(256,), conv=((32, True), (64, True)), batch_size=50,
                          lr=1e-2, lr_end=1e-4),
    "cnv-tiny": Preset(hidden=(64,), conv=((16, True), (32, True)), batch_size=50, lr=1e-2,
                       lr_end=1e-3),
    "cnv-micro": Preset(hidden=(32,), conv=((4, True), (8, True)), batch_size=50, lr=1e-2,
                        lr_end=1e-3),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; ``ValueError`` naming the value and the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
