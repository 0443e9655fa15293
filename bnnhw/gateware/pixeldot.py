"""Pipelined signed sum of 8-bit pixels with +-1 weights: the lanes of an 8-bit first layer.

Maths: for ``N`` pixels ``x_i`` in ``[0, 255]`` and a lane's weight bits ``w_i`` (1 = +1,
0 = -1) the output is ``sum_i (2 w_i - 1) x_i = sum_i (w_i ? x_i : -x_i)``, an integer in
``[-255 N, 255 N]`` held in two's complement. The pixels are shared by all lanes (the MVTU's PEs
see the same input slice); an optional tag travels alongside unchanged.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .popcount import adder_tree, lanes_layout, popcount_latency

__all__ = ["PixelDot", "PIXEL_BITS"]

PIXEL_BITS = 8


class PixelDot(wiring.Component):
    """Add/subtract of ``N`` 8-bit pixels per lane, a registered adder tree with back-pressure.

    The tree has the shape of :class:`~bnnhw.gateware.popcount.Popcount`: the first level adds
    pairs of ``+-x_i`` (the sign chosen by the weight bit) and every level ends in a register,
    so its depth is the same ``popcount_latency(N)``.

    Payload layouts (low bits first):

    * ``i_stream.payload``: ``pixels[i]`` (8 bits each), then ``weights[l]``, lane ``l``'s
      ``N`` weight bits, then ``tag``.
    * ``o_stream.payload`` (:func:`~bnnhw.gateware.popcount.lanes_layout`): ``lanes[l]``, lane
      ``l``'s sum, signed, ``B = count_width = bit_length(255 N) + 1`` bits, then ``tag``.

    The pipeline stalls as a whole: every register advances when ``en = ~o.valid | o.ready``,
    and ``i_stream.ready = en``.

    Timing
    ------
    latency : int
        ``max(1, ceil(log2 N))`` cycles from accepting a word to presenting its sums.
    cycles_per_frame : int
        1 (one word per cycle, a frame being one word).

    Parameters
    ----------
    width : int
        Pixels per lane ``N`` (>= 1).
    lanes : int
        Number of weight rows (>= 1).
    tag_width : int
        Side-band bits carried along with each word.
    """

    def __init__(self, width, lanes=1, tag_width=0):
        if width < 1 or lanes < 1 or tag_width < 0:
            raise ValueError(
                f"pixel dot needs width >= 1, lanes >= 1, tag_width >= 0 "
                f"(width={width}, lanes={lanes}, tag_width={tag_width})")
        self.width = width
        self.lanes = lanes
        self.tag_width = tag_width
        self.count_width = (255 * width).bit_length() + 1
        self.latency = popcount_latency(width)
        self.cycles_per_frame = 1
        in_layout = data.StructLayout({
            "pixels": data.ArrayLayout(unsigned(PIXEL_BITS), width),
            "weights": data.ArrayLayout(unsigned(width), lanes),
            "tag": unsigned(tag_width),
        })
        super().__init__({
            "i_stream": In(stream.Signature(in_layout)),
            "o_stream": Out(stream.Signature(
                lanes_layout(signed(self.count_width), lanes, tag_width))),
        })

    def frame_times(self, in_times):
        """Output time of each word offered at ``in_times`` to an idle unit, consumer ready."""
        return [t + self.latency for t in in_times]

    def elaborate(self, platform):
        m = Module()
        n = self.width
        en = Signal()
        m.d.comb += [
            en.eq(~self.o_stream.valid | self.o_stream.ready),
            self.i_stream.ready.eq(en),
        ]
        payload = self.i_stream.payload
        pixels = [payload.pixels[i] for i in range(n)]
        # Each lane is a list of (value, largest magnitude it can hold).
        lanes = [[(Mux(payload.weights[lane][i], pixels[i], -pixels[i]), 255)
                  for i in range(n)] for lane in range(self.lanes)]
        values, valid, tag = adder_tree(m, en, lanes, self.i_stream.valid, payload.tag,
                                        self.tag_width, signed=True)
        out = self.o_stream.payload
        m.d.comb += [out.lanes[lane].eq(value) for lane, value in enumerate(values)]
        m.d.comb += [self.o_stream.valid.eq(valid), out.tag.eq(tag)]
        return m
