"""Pipelined population count: a registered binary adder tree on a stream.

Maths: for an input word ``x`` of ``N`` bits the output is ``popcount(x) = sum_i x_i``, an
integer in ``[0, N]`` of ``N.bit_length()`` bits. Several independent lanes can share one
pipeline (the MVTU uses one lane per PE), and an optional tag travels alongside unchanged.
"""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AdderTreeUnit", "Popcount", "popcount_latency", "adder_tree", "lanes_layout"]


def lanes_layout(shape, lanes, tag_width):
    """``{"lanes": lanes x shape, "tag": tag_width bits}``, lane 0 in the lowest bits.

    The payload of the adder-tree units: one value per lane, then the side-band tag that
    travels with it.
    """
    return data.StructLayout({"lanes": data.ArrayLayout(shape, lanes),
                              "tag": unsigned(tag_width)})


def popcount_latency(width):
    """Pipeline depth of a popcount over ``width`` bits: ``max(1, ceil(log2(width)))``.

    Each level of the tree adds pairs of partial counts and is followed by a register, so
    ``ceil(log2 N)`` levels reduce ``N`` bits to one count; a 1-bit input still gets one
    register so that the output is always registered.
    """
    return max(1, (width - 1).bit_length())


def adder_tree(m, en, lanes, valid, tag, tag_width, signed=False):
    """Reduce each lane's terms to one sum, one registered level of pairwise adds per cycle.

    Level ``k`` holds ``ceil(N / 2**k)`` partial sums per lane; a pair ``(a, b)`` with bounds
    ``|a| <= A``, ``|b| <= B`` becomes one register of range ``[-(A+B), A+B]`` (signed) or
    ``[0, A+B]``, so no level overflows. ``popcount_latency(N)`` levels leave one sum per lane.
    ``valid`` and ``tag`` are registered alongside, and every register advances only when
    ``en`` is high. Only the ``valid`` registers are reset (:mod:`.registers`).

    Parameters
    ----------
    m : Module
        Receives the registers in its ``sync`` domain.
    en : Value
        Clock enable of the whole pipeline.
    lanes : list of list of (Value, int)
        Per lane, its ``N`` terms, each with the largest magnitude it can take.
    valid, tag : Value
        Side-band signals delayed with the sums.
    tag_width : int
    signed : bool
        Whether terms can be negative.

    Returns
    -------
    sums : list of Value
        One sum per lane, ``popcount_latency(N)`` cycles after its terms.
    valid, tag : Value
        The delayed side-band signals.
    """
    for level in range(popcount_latency(len(lanes[0]))):
        new_lanes = []
        for lane, values in enumerate(lanes):
            new_values = []
            for k in range(0, len(values), 2):
                pair = values[k:k + 2]
                bound = sum(b for _, b in pair)
                shape = range(-bound, bound + 1) if signed else range(bound + 1)
                reg = Signal(shape, name=f"l{lane}_s{level}_{k // 2}", reset_less=True)
                with m.If(en):
                    m.d.sync += reg.eq(sum(v for v, _ in pair))
                new_values.append((reg, bound))
            new_lanes.append(new_values)
        lanes = new_lanes
        valid_reg = Signal(name=f"valid_s{level}")
        tag_reg = Signal(tag_width, name=f"tag_s{level}", reset_less=True)
        with m.If(en):
            m.d.sync += [valid_reg.eq(valid), tag_reg.eq(tag)]
        valid, tag = valid_reg, tag_reg
    return [values[0][0] for values in lanes], valid, tag


class AdderTreeUnit(wiring.Component):
    """A stream unit that reduces ``lanes`` lanes of ``N`` terms each to one sum per lane
    through :func:`adder_tree`, with back-pressure; :class:`Popcount` and
    :class:`~bnnhw.gateware.pixeldot.PixelDot` are its two kinds.

    The pipeline stalls as a whole: every register advances when ``en = ~o.valid | o.ready``,
    and ``i_stream.ready = en``. The output payload is :func:`lanes_layout` of the sum's shape.

    Timing
    ------
    latency : int
        ``max(1, ceil(log2 N))`` cycles from accepting a word to presenting its sums.
    cycles_per_frame : int
        1 (one word per cycle, a frame being one word).

    Parameters
    ----------
    width : int
        Terms per lane ``N`` (>= 1).
    lanes : int
        Number of independent sums (>= 1).
    tag_width : int
        Side-band bits carried along with each word.
    """

    unit_name = "adder tree"
    signed = False

    def __init__(self, width, lanes=1, tag_width=0):
        if width < 1 or lanes < 1 or tag_width < 0:
            raise ValueError(
                f"{self.unit_name} needs width >= 1, lanes >= 1, tag_width >= 0 "
                f"(width={width}, lanes={lanes}, tag_width={tag_width})")
        self.width = width
        self.lanes = lanes
        self.tag_width = tag_width
        sum_shape = self.sum_shape(width)
        self.count_width = sum_shape.width
        self.latency = popcount_latency(width)
        self.cycles_per_frame = 1
        super().__init__({
            "i_stream": In(stream.Signature(self.in_layout(width, lanes, tag_width))),
            "o_stream": Out(stream.Signature(lanes_layout(sum_shape, lanes, tag_width))),
        })

    def frame_times(self, in_times):
        """Output time of each word offered at ``in_times`` to an idle unit, consumer ready."""
        return [t + self.latency for t in in_times]

    def elaborate(self, platform):
        m = Module()
        en = Signal()
        m.d.comb += [
            en.eq(~self.o_stream.valid | self.o_stream.ready),
            self.i_stream.ready.eq(en),
        ]
        payload = self.i_stream.payload
        sums, valid, tag = adder_tree(m, en, self.terms(payload), self.i_stream.valid,
                                      payload.tag, self.tag_width, signed=self.signed)
        out = self.o_stream.payload
        m.d.comb += [out.lanes[lane].eq(value) for lane, value in enumerate(sums)]
        m.d.comb += [self.o_stream.valid.eq(valid), out.tag.eq(tag)]
        return m


class Popcount(AdderTreeUnit):
    """Popcount of ``lanes`` words of ``width`` bits each (an :class:`AdderTreeUnit`).

    Payload layouts (:func:`lanes_layout`, low bits first):

    * ``i_stream.payload``: ``lanes[l]``, lane ``l``'s ``N`` bits, then ``tag``.
    * ``o_stream.payload``: ``lanes[l]``, lane ``l``'s count of ``B = N.bit_length()`` bits,
      then ``tag``.
    """

    unit_name = "popcount"

    @staticmethod
    def sum_shape(width):
        return unsigned(width.bit_length())

    @staticmethod
    def in_layout(width, lanes, tag_width):
        return lanes_layout(unsigned(width), lanes, tag_width)

    def terms(self, payload):
        """Each lane's bits, each a term of largest value 1."""
        return [[(payload.lanes[lane][i], 1) for i in range(self.width)]
                for lane in range(self.lanes)]
