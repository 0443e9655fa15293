# amaranth: UnusedElaboratable=no
"""Stream width conversion that keeps element order (element 0 first, low bits first)."""

from math import gcd

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .registers import payload_register

__all__ = ["WidthConverter"]


class WidthConverter(wiring.Component):
    """Re-chunk a vector of ``V`` bits from ``A``-bit words into ``B``-bit words.

    Bit ``k`` of the vector is bit ``k % A`` of input word ``k // A`` and bit ``k % B`` of
    output word ``k // B``. Three shapes:

    * ``B = r*A`` (up): ``r`` input words are gathered; the ``r``-th goes straight into the
      registered output word together with the ``r - 1`` held ones. Input is refused only
      while a finished output word waits and the incoming word would complete the next one.
    * ``A = r*B`` (down): an input word is registered and sent out in ``r`` slices, low
      first; the next input word is taken while the last slice leaves.
    * otherwise: down to ``g = gcd(A, B)``, then up to ``B`` (two converters in a row).

    Timing
    ------
    latency : int
        Up: ``r`` (``r - 1`` more input words, then the register). Down: 1. General: ``1 +
        B / g``.
    cycles_per_frame : int
        ``V / gcd(A, B)``: one word of the narrowest width in the path per cycle (``V /
        min(A, B)`` for up and down).

    Parameters
    ----------
    in_width, out_width : int
        ``A`` and ``B``.
    length : int
        ``V``, bits per vector; both widths must divide it.
    """

    def __init__(self, in_width, out_width, length):
        if in_width < 1 or out_width < 1 or length % in_width or length % out_width:
            raise ValueError(
                f"width converter: both word widths must divide the vector length "
                f"(A={in_width}, B={out_width}, V={length})")
        self.in_width = in_width
        self.out_width = out_width
        self.length = length
        narrow = gcd(in_width, out_width)
        self.cycles_per_frame = length // narrow
        if narrow not in (in_width, out_width):
            self._parts = (WidthConverter(in_width, narrow, length),
                           WidthConverter(narrow, out_width, length))
        else:
            self._parts = ()
        self.latency = self.frame_times(range(length // in_width))[0]
        super().__init__({
            "i_stream": In(stream.Signature(in_width)),
            "o_stream": Out(stream.Signature(out_width)),
        })

    def frame_times(self, in_times):
        """Output times of one frame offered at ``in_times`` to an idle unit, consumer ready.

        Up: output ``j`` at ``in_times[j*r + r - 1] + 1``. Down: input word ``i`` is taken at
        ``a_i = max(in_times[i], a_{i-1} + r)`` and its slices leave at ``a_i + 1 ... a_i + r``.
        """
        in_times = list(in_times)
        if self._parts:
            return self._parts[1].frame_times(self._parts[0].frame_times(in_times))
        if self.out_width >= self.in_width:
            r = self.out_width // self.in_width
            return [in_times[j * r + r - 1] + 1 for j in range(len(in_times) // r)]
        r = self.in_width // self.out_width
        out, taken = [], None
        for t in in_times:
            taken = t if taken is None else max(t, taken + r)
            out.extend(taken + 1 + k for k in range(r))
        return out

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        if self._parts:
            m.submodules.down, m.submodules.up = self._parts
            wiring.connect(m, wiring.flipped(i), self._parts[0].i_stream)
            wiring.connect(m, self._parts[0].o_stream, self._parts[1].i_stream)
            wiring.connect(m, self._parts[1].o_stream, wiring.flipped(o))
        elif self.out_width >= self.in_width:
            self._elaborate_up(m)
        else:
            self._elaborate_down(m)
        return m

    def _elaborate_up(self, m):
        i, o = self.i_stream, self.o_stream
        r = self.out_width // self.in_width
        count = Signal(range(r))
        held = Signal((r - 1) * self.in_width, reset_less=True)
        completes = count == r - 1
        payload = payload_register(m, o, "payload")
        m.d.comb += i.ready.eq(~completes | ~o.valid | o.ready)
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(i.valid & i.ready):
            with m.If(completes):
                m.d.sync += [count.eq(0), o.valid.eq(1), payload.eq(Cat(held, i.payload))]
            with m.Else():
                m.d.sync += count.eq(count + 1)
                if r > 1:
                    m.d.sync += held.eq(Cat(held[self.in_width:], i.payload))

    def _elaborate_down(self, m):
        i, o = self.i_stream, self.o_stream
        r = self.in_width // self.out_width
        b = self.out_width
        word = Signal(self.in_width, reset_less=True)
        part = Signal(range(r))
        m.d.comb += [
            i.ready.eq(~o.valid | (o.ready & (part == r - 1))),
            o.payload.eq(word.word_select(part, b)),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += part.eq(part + 1)
            with m.If(part == r - 1):
                m.d.sync += [part.eq(0), o.valid.eq(0)]
        with m.If(i.valid & i.ready):
            m.d.sync += [word.eq(i.payload), o.valid.eq(1), part.eq(0)]
