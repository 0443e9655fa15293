"""The amaranth-boards platform behind each board of :data:`bnnhw.devices.BOARDS`.

Only this package knows about platforms; the accelerator (:mod:`bnnhw.gateware`) is
board-agnostic, and the board facts (device, clock, RAM, LEDs) live in :mod:`bnnhw.devices`.

Host link pins: the iCEBreaker and the ULX3S use the UART of their FTDI USB bridge. The
OrangeCrab's USB port goes straight to the FPGA (no UART bridge), so its UART is placed on
the Feather header: FPGA receive on pin ``0`` (Feather RX), transmit on pin ``1`` (Feather
TX), for a 3.3 V USB-serial adapter.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from amaranth.build import Attrs
from amaranth_boards.resources import UARTResource

from bnnhw.devices import BOARDS, Board, get_board

__all__ = ["BOARDS", "EXTRA_RESOURCES", "Board", "get_board", "make_platform"]


def make_platform(board: Board) -> Any:
    """An instance of ``board``'s amaranth-boards platform, with the host-link UART present.

    The platform class is imported on use (``board.platform`` names it as ``module:Class``),
    so only the board being built loads its definition.
    """
    module, cls = board.platform.split(":")
    platform = getattr(importlib.import_module(module), cls)()
    for name in board.extra_resources:
        if name not in EXTRA_RESOURCES:
            raise ValueError(f"board {board.name}: unknown extra resource {name!r} "
                             f"(choices: {', '.join(sorted(EXTRA_RESOURCES))})")
        platform.add_resources(EXTRA_RESOURCES[name](platform))
    return platform


EXTRA_RESOURCES: dict[str, Callable[[Any], list]] = {
    "uart-io0-io1": lambda platform: [UARTResource(
        0, rx="0", tx="1", conn=("io", 0), attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))],
    "break-off-pmod": lambda platform: platform.break_off_pmod,
}
"""Resources a board entry may add to its platform (:attr:`bnnhw.devices.Board.
extra_resources`), by name: each maps the platform to the resources to add."""
