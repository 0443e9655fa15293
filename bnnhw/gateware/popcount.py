"""Pipelined population count: a registered binary adder tree on a stream.

Maths: for an input word ``x`` of ``N`` bits the output is ``popcount(x) = sum_i x_i``, an
integer in ``[0, N]`` of ``N.bit_length()`` bits. Several independent lanes can share one
pipeline (the MVTU uses one lane per PE), and an optional tag travels alongside unchanged.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Popcount", "popcount_latency"]


def popcount_latency(width):
    """Pipeline depth of a popcount over ``width`` bits: ``max(1, ceil(log2(width)))``.

    Each level of the tree adds pairs of partial counts and is followed by a register, so
    ``ceil(log2 N)`` levels reduce ``N`` bits to one count; a 1-bit input still gets one
    register so that the output is always registered.
    """
    return max(1, (width - 1).bit_length())


class Popcount(wiring.Component):
    """Popcount of ``lanes`` words of ``width`` bits each, pipelined, with back-pressure.

    Payload layouts (plain unsigned, low bits first):

    * ``i_stream.payload``: lane ``l`` in bits ``[l*N, (l+1)*N)``, then ``tag_width`` tag bits.
    * ``o_stream.payload``: lane ``l``'s count in bits ``[l*B, (l+1)*B)`` with
      ``B = N.bit_length()``, then the tag.

    The pipeline stalls as a whole: every register advances when ``en = ~o.valid | o.ready``,
    and ``i_stream.ready = en``.

    Timing
    ------
    latency : int
        ``max(1, ceil(log2 N))`` cycles from accepting a word to presenting its count.
    cycles_per_frame : int
        1 (one word per cycle, a frame being one word).

    Parameters
    ----------
    width : int
        Bits per lane ``N`` (>= 1).
    lanes : int
        Number of independent counts (>= 1).
    tag_width : int
        Side-band bits carried along with each word.
    """

    def __init__(self, width, lanes=1, tag_width=0):
        if width < 1 or lanes < 1 or tag_width < 0:
            raise ValueError(
                f"popcount needs width >= 1, lanes >= 1, tag_width >= 0 "
                f"(width={width}, lanes={lanes}, tag_width={tag_width})")
        self.width = width
        self.lanes = lanes
        self.tag_width = tag_width
        self.count_width = width.bit_length()
        self.latency = popcount_latency(width)
        self.cycles_per_frame = 1
        super().__init__({
            "i_stream": In(stream.Signature(lanes * width + tag_width)),
            "o_stream": Out(stream.Signature(lanes * self.count_width + tag_width)),
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
        # Each lane is a list of (value, largest count it can hold).
        lanes = [[(payload[lane * n + i], 1) for i in range(n)] for lane in range(self.lanes)]
        tag = payload[self.lanes * n:]
        valid = self.i_stream.valid
        for level in range(self.latency):
            new_lanes = []
            for lane, values in enumerate(lanes):
                new_values = []
                for k in range(0, len(values), 2):
                    pair = values[k:k + 2]
                    bound = sum(b for _, b in pair)
                    reg = Signal(range(bound + 1), name=f"l{lane}_s{level}_{k // 2}")
                    with m.If(en):
                        m.d.sync += reg.eq(sum(v for v, _ in pair))
                    new_values.append((reg, bound))
                new_lanes.append(new_values)
            lanes = new_lanes
            valid_reg = Signal(name=f"valid_s{level}")
            tag_reg = Signal(self.tag_width, name=f"tag_s{level}")
            with m.If(en):
                m.d.sync += [valid_reg.eq(valid), tag_reg.eq(tag)]
            valid, tag = valid_reg, tag_reg
        counts = []
        for values in lanes:
            (value, _), = values
            count = Signal(self.count_width)
            m.d.comb += count.eq(value)
            counts.append(count)
        m.d.comb += [
            self.o_stream.valid.eq(valid),
            self.o_stream.payload.eq(Cat(*counts, tag)),
        ]
        return m
