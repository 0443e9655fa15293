"""Sliding-window unit (SWU): a bit map in, pixel by pixel, its im2col windows out."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

__all__ = ["SlidingWindowUnit"]


class SlidingWindowUnit(wiring.Component):
    """The ``K x K`` windows (stride 1, no padding) of an ``H x W x C`` bit map, as a stream.

    Maths (as :func:`bnnhw.reference.im2col`): input word ``y * W + x`` of a frame is pixel
    ``(y, x)``, channel ``c`` in bit ``c`` (raster order, channel innermost). For each output
    position ``(oy, ox)`` in ``[0, H - K] x [0, W - K]``, raster order, the unit emits the
    ``K * K * C``-bit vector ``v[(ky * K + kx) * C + c] = x[oy + ky, ox + kx, c]`` as
    ``S = K * K * C / out_width`` words of ``out_width`` bits, low bits first.

    Structure:

    * **Input queue.** A FIFO (:class:`amaranth.lib.fifo.SyncFIFOBuffered`, a memory) of ``Q =
      max(3, (K - 1) * W + K)`` pixels: the most that pass between two window pixels (from a
      frame's last window to the next frame's first), and at least 3, the least depth at
      which that FIFO passes one word per cycle. While the unit waits for its consumer,
      the producer keeps filling the queue, so after the last window of a frame the pixels of
      the next frame's first window are already there and the consumer (the conv MVTU) does
      not run dry while the unit reads ``K - 1`` new rows.
    * **Line buffer.** A memory of ``W`` words of ``(K - 1) * C`` bits: while pixel ``(y,
      x)`` arrives, word ``x`` holds the pixels ``(y - K + 1 .. y - 1, x)``, oldest in the low
      bits. It is read synchronously at the next position (a register, one pixel ahead; a
      ``(K - 1) * C``-bit register keeps the word of a pixel that waits) and written back
      with the oldest pixel dropped and ``(y, x)`` added, so each pixel is stored once per row
      it is needed in. ``K = 1`` needs no buffer.
    * **Window.** ``K - 1`` column registers of ``K * C`` bits hold columns ``x - K + 1 ..
      x - 1`` of rows ``y - K + 1 .. y``; each pixel shifts them by one column.
    * **Output.** When pixel ``(y, x)`` with ``y, x >= K - 1`` arrives, the window ending at
      it (position ``(y - K + 1, x - K + 1)``) is copied into an output register and sent in
      ``S`` slices. Only such *window pixels* wait for the register: ``i_stream.ready`` is
      low while a window pixel is offered and the register still holds slices that are not
      leaving this cycle. Other pixels are taken every cycle. The input queue's
      ``i_stream.ready`` is low only while it is full.
    * **Clock.** Whether a pixel is taken, and whether the output register loads, are
      functions of a handful of flip-flops (queue valid, window-position flags, output
      valid, last-slice flag) and the consumer's ready, so the only long wires are the
      enables of the window and output registers (``(2K - 1) * K * C`` bits).

    Timing
    ------
    With the producer always offering and the consumer always ready:

    latency : int
        ``(K - 1) * W + K + 2``: the first window pixel is word ``(K - 1) * W + K - 1``; it
        leaves the queue 2 cycles after it enters, and its first slice is registered one
        cycle after it is taken.
    cycles_per_frame : int
        ``OH * (OW - 1) * S + (OH - 1) * max(K, S) + max((K - 1) * W + K, S)``, the sum of the
        gaps between successive window pixels over one frame: ``S`` within a row, ``max(K,
        S)`` from the end of one window row to the next (``K`` pixels apart), ``max((K - 1)
        * W + K, S)`` from a frame's last window to the next frame's first. For ``S = 1`` it
        is ``H * W``, one pixel per cycle (the queue passes one pixel per cycle).

    Parameters
    ----------
    in_shape : tuple of int
        ``(H, W, C)``.
    kernel : int
        ``K``, in ``[1, min(H, W)]``.
    out_width : int
        Bits per output word; must divide ``K * K * C``.
    """

    def __init__(self, in_shape, kernel, out_width):
        h, w, c = (int(v) for v in in_shape)
        if min(h, w, c) < 1 or not 1 <= kernel <= min(h, w):
            raise ValueError(
                f"sliding window needs H, W, C >= 1 and 1 <= K <= min(H, W) "
                f"(in_shape={(h, w, c)}, K={kernel})")
        if out_width < 1 or (kernel * kernel * c) % out_width:
            raise ValueError(
                f"sliding window: output width must divide K*K*C "
                f"(out_width={out_width}, K*K*C={kernel * kernel * c})")
        self.in_shape = (h, w, c)
        self.kernel = kernel
        self.out_width = out_width
        self.out_shape = (h - kernel + 1, w - kernel + 1)
        self.slices = kernel * kernel * c // out_width
        oh, ow = self.out_shape
        s, k = self.slices, kernel
        self.cycles_per_frame = (oh * (ow - 1) * s + (oh - 1) * max(k, s)
                                 + max((k - 1) * w + k, s))
        self.queue_depth = max(3, (k - 1) * w + k)
        self.latency = (k - 1) * w + k + 2
        super().__init__({
            "i_stream": In(stream.Signature(c)),
            "o_stream": Out(stream.Signature(out_width)),
        })

    def frame_times(self, in_times):
        """Output times of one frame offered at ``in_times`` (``H * W`` words), consumer ready.

        The queue offers pixel ``j`` from ``in_times[j] + 2`` (when it is full it holds back
        only the producer, whose pixels the window logic would not take earlier anyway). The
        window logic takes it at ``a_j = max(in_times[j] + 2, a_{j-1} + 1)``, and a window
        pixel also no earlier than ``b + S`` (``b``: when the previous window pixel was taken);
        the slices of its window leave at ``a_j + 1, ..., a_j + S``.
        """
        h, w, _ = self.in_shape
        k, s = self.kernel, self.slices
        out, taken, window = [], -1, None
        for j, t in enumerate(in_times):
            taken = max(t + 2, taken + 1)
            if j // w >= k - 1 and j % w >= k - 1:
                if window is not None:
                    taken = max(taken, window + s)
                window = taken
                out.extend(taken + 1 + i for i in range(s))
        return out

    def elaborate(self, platform):
        m = Module()
        i, o = self.i_stream, self.o_stream
        h, w, c = self.in_shape
        k, s = self.kernel, self.slices

        m.submodules.queue = queue = SyncFIFOBuffered(width=c, depth=self.queue_depth)
        pixel, ready = queue.r_data, Signal()
        fire = queue.r_rdy & ready
        m.d.comb += [
            queue.w_data.eq(i.payload),
            queue.w_en.eq(i.valid),
            i.ready.eq(queue.w_rdy),
            queue.r_en.eq(ready),
        ]

        # Pixel position, and whether it ends a window, kept as flags so that ``fire`` is
        # a function of a few flip-flops: ``row_ok`` is ``y >= K - 1``, ``col_ok`` is
        # ``x >= K - 1``.
        x, y = Signal(range(w)), Signal(range(h))
        row_ok, col_ok = Signal(init=k == 1), Signal(init=k == 1)
        with m.If(fire):
            with m.If(x == w - 1):
                m.d.sync += [x.eq(0), col_ok.eq(k == 1)]
                with m.If(y == h - 1):
                    m.d.sync += [y.eq(0), row_ok.eq(k == 1)]
                with m.Else():
                    m.d.sync += [y.eq(y + 1), row_ok.eq(row_ok | (y == k - 2))]
            with m.Else():
                m.d.sync += [x.eq(x + 1), col_ok.eq(col_ok | (x == k - 2))]

        # The new column: rows y-K+1 .. y at x, oldest first. The line buffer is always read
        # at the next position ``ahead = (x + 1) mod W`` (a register), so no read address
        # depends on ``fire``: the word read lands one cycle later, when ``x`` has moved there
        # if the pixel was taken (``taken``); otherwise the word for ``x`` is still in
        # ``kept``, which holds the current word every cycle.
        if k > 1:
            m.submodules.lines = lines = memory.Memory(
                shape=unsigned((k - 1) * c), depth=w, init=[])
            read, write = lines.read_port(), lines.write_port()
            ahead, taken = Signal(range(w), init=1 % w), Signal()
            kept = Signal((k - 1) * c, reset_less=True)
            above = Mux(taken, read.data, kept)
            column = Cat(above, pixel)
            m.d.sync += [taken.eq(fire), kept.eq(above)]
            with m.If(fire):
                m.d.sync += ahead.eq(Mux(ahead == w - 1, 0, ahead + 1))
            m.d.comb += [
                read.addr.eq(ahead),
                write.addr.eq(x),
                write.data.eq(column[c:]),
                write.en.eq(fire),
            ]
        else:
            column = pixel
        columns = [Signal(k * c, name=f"column{j}", reset_less=True) for j in range(k - 1)]
        window = columns + [column]                 # columns x-K+1 .. x
        with m.If(fire):
            m.d.sync += [a.eq(b) for a, b in zip(columns, window[1:], strict=True)]

        # Output register, sent in S slices.
        vector = Cat(*(window[kx][ky * c:(ky + 1) * c] for ky in range(k) for kx in range(k)))
        held = Signal(k * k * c, reset_less=True)
        part = Signal(range(s))
        last = Signal(init=s == 1)                  # part == S - 1
        is_window = row_ok & col_ok
        free = ~o.valid | (o.ready & last)          # the register may be loaded this cycle
        # ``load`` is written out rather than as ``fire & is_window`` so that synthesis
        # gives the output register's enable its own short logic cone.
        load = queue.r_rdy & is_window & free
        m.d.comb += [
            ready.eq(~is_window | free),
            o.payload.eq(held.word_select(part, self.out_width)),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += [part.eq(Mux(last, 0, part + 1)),
                         last.eq(Mux(last, s == 1, part == s - 2))]
            with m.If(last):
                m.d.sync += o.valid.eq(0)
        with m.If(load):
            m.d.sync += [held.eq(vector), o.valid.eq(1), part.eq(0), last.eq(s == 1)]
        return m
