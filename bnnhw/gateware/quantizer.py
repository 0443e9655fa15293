"""Input quantizer: 8-bit pixels to a thermometer code, on a stream."""

from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .registers import payload_register

__all__ = ["InputQuantizer"]


class InputQuantizer(wiring.Component):
    """Thermometer-code ``P`` pixels per word with ``L`` thresholds.

    Maths: with thresholds ``t_0 < ... < t_{L-1}``, input pixel ``j`` of a word (bits
    ``[8j, 8j+8)``) gives output bits ``j*L + l = (pixel_j >= t_l)`` for ``l < L``, the same
    code as :meth:`bnnhw.model.InputQuantizer.quantize`. The output word of ``P*L`` bits is
    registered; ``i_stream.ready = ~o.valid | o.ready``.

    Timing
    ------
    latency : int
        1 (one output register).
    cycles_per_frame : int
        ``pixels / P``, one word per cycle.

    Parameters
    ----------
    thresholds : tuple of int
        The model's thresholds, each in ``[0, 256]``.
    pixels : int
        Pixels per frame.
    pixels_per_word : int
        ``P``; must divide ``pixels``.
    """

    def __init__(self, thresholds, pixels, pixels_per_word):
        if pixels_per_word < 1 or pixels % pixels_per_word:
            raise ValueError(
                f"pixels per word must divide the pixel count "
                f"(pixels={pixels}, pixels_per_word={pixels_per_word})")
        self.thresholds = tuple(int(t) for t in thresholds)
        self.pixels = pixels
        self.pixels_per_word = pixels_per_word
        self.levels = len(self.thresholds)
        self.latency = 1
        self.cycles_per_frame = pixels // pixels_per_word
        super().__init__({
            "i_stream": In(stream.Signature(8 * pixels_per_word)),
            "o_stream": Out(stream.Signature(pixels_per_word * self.levels)),
        })

    def frame_times(self, in_times):
        """Output time of each word offered at ``in_times`` to an idle unit, consumer ready."""
        return [t + 1 for t in in_times]

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        m.d.comb += i.ready.eq(~o.valid | o.ready)
        levels = payload_register(m, o, "levels")
        bits = [i.payload[8 * j:8 * j + 8] >= t
                for j in range(self.pixels_per_word) for t in self.thresholds]
        with m.If(i.valid & i.ready):
            m.d.sync += [levels.eq(Cat(*bits)), o.valid.eq(1)]
        with m.Elif(o.ready):
            m.d.sync += o.valid.eq(0)
        return m
