"""Weights in the iCE40UP5K's single-port RAM (SPRAM), written at run time over the host link.

The UP5K has four ``SB_SPRAM256KA`` blocks of 16,384 words of 16 bits and no way to give them
initial contents, so a layer whose weights live there is loaded with LOAD_WEIGHTS requests
(:mod:`bnnhw.boards.protocol`) after configuration.

Layout (the one definition; :func:`weight_image` and the gateware follow it)
---------------------------------------------------------------------------
All PEs of an MVTU read the same weight address ``a = nf * SF + sf`` in the same cycle, so an
SPRAM layer keeps one wide word per address: PE ``pe``'s ``SIMD`` bits (bit ``i`` = column
``sf * SIMD + i`` of row ``nf * PE + pe``, :func:`bnnhw.packing.mvtu_weight_words`) at bits
``[pe * SIMD, (pe + 1) * SIMD)``. Bits ``[16 j, 16 j + 16)`` sit at address ``a`` of the
layer's ``j``-th SPRAM, ``j < n``, the last one padded with zeros. The layer thus streams
``PE * SIMD`` weight bits per cycle, with ``NF * SF <= 16384`` words in each SPRAM. Layers are
given SPRAMs in layer order, from SPRAM 0, ``n = ceil(PE * SIMD / 16)`` each; if that needs
more than four, layers whose last SPRAM would be partly used (``16 n > PE * SIMD``) give it
up, last layer first, and keep those ``PE * SIMD - 16 (n - 1)`` tail bits in a block RAM ROM
(initialised in the bitstream, not part of the image). For example ``1x49`` (49 lanes) takes
three SPRAMs and a 1-bit ROM.

The weight image is the four SPRAMs end to end as little-endian 16-bit words: SPRAM ``s``
word ``a`` is at byte offset ``2 * (16384 s + a)``. The link writes word ``offset / 2`` with
bits 14-15 choosing the SPRAM and bits 0-13 the address.

Bandwidth: every SPRAM gives one 16-bit word per cycle, so the four give at most 64 weight
bits per cycle to the layers placed there; the other layers keep their block RAM ROMs.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Cat, ClockSignal, Elaboratable, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import memory

from bnnhw.devices import SPRAM_WIDTH, SPRAM_WORDS
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.gateware.mvtu import MVTU
from bnnhw.packing import mvtu_weight_words, words_to_ints

__all__ = ["SpramAccelerator", "WeightBus", "weight_image"]

def _wide_words(weights, p) -> np.ndarray:
    """``(depth, PE * SIMD)`` bits: every PE's weight word at each address, PE 0 lowest."""
    words = mvtu_weight_words(weights, p.pe, p.simd)
    return words.transpose(1, 0, 2).reshape(p.depth, p.pe * p.simd)


def weight_image(model, plan) -> list[tuple[int, bytes]]:
    """The ``(byte offset, data)`` regions of the weight image for the layers in ``plan``."""
    regions = []
    for p in plan:
        wide = _wide_words(model.layers[p.index].weights, p)
        padded = np.zeros((p.depth, p.count * SPRAM_WIDTH), np.uint8)
        used = min(wide.shape[1], padded.shape[1])
        padded[:, :used] = wide[:, :used]
        for j in range(p.count):
            block = padded[:, j * SPRAM_WIDTH:(j + 1) * SPRAM_WIDTH]
            data = np.packbits(block, axis=1, bitorder="little").tobytes()
            regions.append((2 * SPRAM_WORDS * (p.first + j), data))
    return regions


class WeightBus:
    """Write port shared by every SPRAM: ``en`` writes ``data`` at word ``addr`` (bits 14-15:
    SPRAM, bits 0-13: address)."""

    def __init__(self):
        self.addr = Signal(16)
        self.data = Signal(SPRAM_WIDTH)
        self.en = Signal()


class _Port:
    def __init__(self, depth, data):
        self.addr = Signal(range(depth))
        self.en = Signal()
        self.data = data


class _SpramBank(Elaboratable):
    """The SPRAMs (and tail ROM) of one layer behind one synchronous read port (``en`` = chip
    select). A write on the bus to one of its SPRAMs takes that SPRAM's address for the cycle.
    ``tail`` is the ROM's init: the wide words' bits above ``16 * count``. With ``preload``
    (one list of 16-bit words per SPRAM) each SPRAM is a behavioural model instead, an
    :class:`amaranth.lib.memory.Memory` starting with those words, for Amaranth's simulator.
    """

    def __init__(self, p, bus, tail, preload=None):
        self.plan, self.bus, self.tail, self.preload = p, bus, tail, preload
        self.data = Signal(p.count * SPRAM_WIDTH + p.rom_bits)
        self.port = _Port(p.depth, self.data[:p.simd])

    def read_port(self):
        return self.port

    def elaborate(self, platform):
        m = Module()
        bus, port = self.bus, self.port
        outs = []
        for j in range(self.plan.count):
            sel = bus.en & (bus.addr[14:] == self.plan.first + j)
            out = Signal(SPRAM_WIDTH, name=f"dataout{j}")
            if self.preload is not None:
                m.submodules[f"spram{j}"] = mem = memory.Memory(
                    shape=unsigned(SPRAM_WIDTH), depth=SPRAM_WORDS, init=self.preload[j])
                write, read = mem.write_port(), mem.read_port()
                m.d.comb += [write.addr.eq(bus.addr[:14]), write.data.eq(bus.data),
                             write.en.eq(sel), read.addr.eq(port.addr),
                             read.en.eq(port.en & ~sel), out.eq(read.data)]
                outs.append(out)
                continue
            m.submodules[f"spram{j}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=Mux(sel, bus.addr[:14], port.addr), i_DATAIN=bus.data,
                i_MASKWREN=0b1111, i_WREN=sel, i_CHIPSELECT=port.en | sel,
                i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=out)
            outs.append(out)
        if self.plan.rom_bits:
            m.submodules.tail = rom = memory.Memory(shape=unsigned(self.plan.rom_bits),
                                                    depth=self.plan.depth, init=self.tail)
            read = rom.read_port()
            m.d.comb += [read.addr.eq(port.addr), read.en.eq(port.en)]
            outs.append(read.data)
        m.d.comb += self.data.eq(Cat(*outs))
        return m


class _Slice(Elaboratable):
    """PE ``pe``'s view of a bank: the bank's read port, data bits of that PE."""

    def __init__(self, bank, pe, simd):
        self.port = _Port(bank.plan.depth, bank.data[pe * simd:(pe + 1) * simd])

    def read_port(self):
        return self.port

    def elaborate(self, platform):
        return Module()


class _SpramMVTU(MVTU):
    """An MVTU whose weights are read from a :class:`_SpramBank` (PE 0 drives its port)."""

    def __init__(self, layer, p, in_width, bus, name, preload=None):
        super().__init__(layer.weights, layer.thresholds, p.pe, p.simd, in_width, name=name)
        tail = []
        if p.rom_bits:
            tail = words_to_ints(_wide_words(layer.weights, p)[:, p.count * SPRAM_WIDTH:])
        self.bank = _SpramBank(p, bus, tail, preload)

    def weight_memory(self, pe, init, width):
        """PE 0 gets the bank, the others a slice of its data; ``init`` goes by LOAD_WEIGHTS."""
        return self.bank if pe == 0 else _Slice(self.bank, pe, self.simd)

    def weight_slices(self):
        """One slice: the bank holds whole weight words."""
        return [self.simd]

    def weight_offsets(self):
        """All zero: the bank is read at PE 0's address, in the layout LOAD_WEIGHTS writes."""
        return [[0]] * self.pe


class SpramAccelerator(Accelerator):
    """:class:`~bnnhw.gateware.dataflow.Accelerator` with the layers of ``plan`` in SPRAM.

    Timing is the same as the ROM accelerator's (an SPRAM read port has the same one-cycle
    synchronous read). Until the image is loaded those layers compute with whatever the SPRAMs
    hold. With ``behavioural=True`` the SPRAMs are Amaranth memories that start with the
    model's image already loaded (for Amaranth's simulator, which cannot run
    ``SB_SPRAM256KA``); the write bus still writes them.

    Parameters
    ----------
    model, folding
    plan : tuple of bnnhw.devices.SpramLayer
        From :func:`bnnhw.devices.plan_spram`.
    bus : WeightBus
        Driven by the host link.
    behavioural : bool
        Simulation model instead of ``SB_SPRAM256KA`` instances.
    """

    def __init__(self, model, folding, plan, bus, behavioural=False):
        self.plan = {p.index: p for p in plan}
        self.bus = bus
        self.preload = None
        if behavioural:
            self.preload = {}
            for offset, data in weight_image(model, plan):
                words = np.frombuffer(data, "<u2").tolist()
                self.preload[offset // (2 * SPRAM_WORDS)] = words
        super().__init__(model, folding)

    def make_mvtu(self, index, layer, pe, simd, in_width, banks=2):
        """SPRAM-backed MVTU for the layers of the plan, the usual ROM MVTU otherwise."""
        if index in self.plan:
            p = self.plan[index]
            preload = (None if self.preload is None else
                       [self.preload[p.first + j] for j in range(p.count)])
            return _SpramMVTU(layer, p, in_width, self.bus, str(index), preload)
        return super().make_mvtu(index, layer, pe, simd, in_width, banks)
