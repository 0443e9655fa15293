"""Streaming 2x2 max-pool of a bit map: the OR of each window, one pixel per cycle."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .registers import payload_register

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """``2 x 2`` max-pool, stride 2, of an ``H x W x C`` bit map streamed pixel by pixel.

    Maths (as :func:`bnnhw.reference.maxpool_bits`): output pixel ``(oy, ox)`` of the
    ``floor(H / 2) x floor(W / 2) x C`` map is ``x[2oy, 2ox] | x[2oy, 2ox+1] | x[2oy+1, 2ox] |
    x[2oy+1, 2ox+1]`` (bitwise over the ``C`` channels; the max of +-1 values is their OR). An
    odd last row or column is read and dropped. Input word ``y * W + x`` is pixel ``(y, x)``
    (``C`` bits), output word ``oy * OW + ox`` likewise.

    Structure: a register holds the left pixel of the current pair. On an even row the pair's
    OR goes into a row memory of ``OW`` words of ``C`` bits at ``x // 2``; on an odd row the
    right pixel of a pair, the left one and the memory word (read synchronously at ``x // 2``
    since the pair began) are ORed into the output register. Only those right pixels wait
    for the output register: ``i_stream.ready = ~emit | ~o.valid | o.ready``.

    Timing
    ------
    With the producer always offering and the consumer always ready:

    latency : int
        ``W + 2``: the first output's last pixel is word ``W + 1``, then the register.
    cycles_per_frame : int
        ``H * W``, one pixel per cycle.

    Parameters
    ----------
    in_shape : tuple of int
        ``(H, W, C)`` with ``H, W >= 2``.
    """

    def __init__(self, in_shape):
        h, w, c = (int(v) for v in in_shape)
        if min(h, w) < 2 or c < 1:
            raise ValueError(f"max-pool needs H, W >= 2 and C >= 1 (in_shape={(h, w, c)})")
        self.in_shape = (h, w, c)
        self.out_shape = (h // 2, w // 2, c)
        self.latency = w + 2
        self.cycles_per_frame = h * w
        super().__init__({
            "i_stream": In(stream.Signature(c)),
            "o_stream": Out(stream.Signature(c)),
        })

    def frame_times(self, in_times):
        """Output times of one frame offered at ``in_times`` (``H * W`` words), consumer ready.

        Pixel ``j`` is taken at ``a_j = max(in_times[j], a_{j-1} + 1)``; output ``(oy, ox)``
        leaves at ``a_j + 1`` for ``j = (2 oy + 1) * W + 2 ox + 1``.
        """
        _, w, _ = self.in_shape
        oh, ow, _ = self.out_shape
        taken, accepted = -1, []
        for t in in_times:
            taken = max(t, taken + 1)
            accepted.append(taken)
        return [accepted[(2 * oy + 1) * w + 2 * ox + 1] + 1
                for oy in range(oh) for ox in range(ow)]

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        h, w, c = self.in_shape
        oh, ow, _ = self.out_shape

        x, y = Signal(range(w)), Signal(range(h))
        fire = i.valid & i.ready
        with m.If(fire):
            with m.If(x == w - 1):
                m.d.sync += [x.eq(0), y.eq(Mux(y == h - 1, 0, y + 1))]
            with m.Else():
                m.d.sync += x.eq(x + 1)

        m.submodules.row = row = memory.Memory(shape=unsigned(c), depth=ow, init=[])
        read, write = row.read_port(), row.write_port()
        left = Signal(c, reset_less=True)
        pooled = payload_register(m, o, "pooled")
        inside = (y < 2 * oh) & (x < 2 * ow)
        right = inside & x[0]
        emit = right & y[0]
        pair = left | i.payload
        m.d.comb += [
            read.addr.eq(x >> 1),
            write.addr.eq(x >> 1),
            write.data.eq(pair),
            write.en.eq(fire & right & ~y[0]),
            i.ready.eq(~emit | ~o.valid | o.ready),
        ]
        with m.If(fire & ~x[0]):
            m.d.sync += left.eq(i.payload)
        with m.If(o.valid & o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(fire & emit):
            m.d.sync += [o.valid.eq(1), pooled.eq(pair | read.data)]
        return m
