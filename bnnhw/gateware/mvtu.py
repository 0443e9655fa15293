"""Matrix-vector-threshold unit (MVTU) with PE/SIMD folding and a ping-pong input buffer."""

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from ..packing import check_folding, mvtu_thresholds, mvtu_weight_words, words_to_ints
from .pixeldot import PIXEL_BITS, PixelDot
from .popcount import Popcount, popcount_latency

WEIGHT_SLICE_BITS = 8 * 16384
"""Most weight bits behind one address counter: the data bits of 8 ECP5 DP16KD blocks. A PE
whose memory is larger has it split into column slices (:meth:`MVTU.weight_slices`). It is
more than all the block RAM of an iCE40UP5K (30 x 4 Kbit), so iCE40 designs are never split."""

WEIGHT_SLICE_QUANTUM = 36
"""Slice widths are multiples of this: the widest DP16KD port. yosys packs a deep memory into
36-bit-wide columns of cascaded blocks plus one narrower block for the rest, so cutting at
multiples of 36 bits leaves the block count unchanged."""


__all__ = ["MVTU", "WEIGHT_SLICE_BITS", "WEIGHT_SLICE_QUANTUM"]


class MVTU(wiring.Component):
    """One binary dense layer of ``MH`` neurons over ``MW`` input bits, folded by PE and SIMD.

    Maths (as :mod:`bnnhw.reference`): for input bits ``x`` and weight row ``w_r``,
    ``P_r = sum_k XNOR(x_k, w_rk)``. A thresholded layer emits bit ``P_r >= T_r``; the output
    layer emits ``P_r`` itself as an unsigned score of ``MW.bit_length()`` bits.

    With ``pixels8`` (the first layer of a ``pixels8`` model) the ``MW`` inputs are 8-bit
    pixels ``x_k`` in ``[0, 255]``, input element ``k`` in bits ``[8k, 8k+8)`` of the vector,
    and the unit computes ``a_r = sum_k (w_rk ? x_k : -x_k)`` with :class:`PixelDot` lanes
    (add or subtract instead of XNOR-popcount) into signed accumulators of
    ``bit_length(255 MW) + 1`` bits, and emits ``a_r >= T_r`` by a signed compare with
    thresholds in ``[-255 MW, 255 MW + 1]``. Every width in bits below (``in_width``, the
    buffer, one SIMD slice) is then 8 times the element count; the timing is unchanged.

    Folding and memories (:mod:`bnnhw.packing`): ``NF = MH / PE``, ``SF = MW / SIMD``. PE
    ``pe`` has its own weight ROM of ``NF * SF`` words of ``SIMD`` bits
    (:func:`~bnnhw.packing.mvtu_weight_words`; stored rotated and read by an address counter
    of its own, :meth:`weight_offsets`, and cut into column slices when large,
    :meth:`weight_slices`) and a threshold slot per neuron fold
    (:func:`~bnnhw.packing.mvtu_thresholds`). Output word ``nf`` holds lane ``pe`` = neuron
    ``nf * PE + pe`` (one bit, or one score of ``MW.bit_length()`` bits).

    Structure:

    * **Collector.** Input words of ``in_width = r * SIMD`` bits are written into a ring of
      ``B`` banks (``banks``, 2 by default: a ping-pong buffer) of ``D = MW / in_width``
      words. A full bank is handed to the compute side; the collector fills the next bank
      meanwhile, so the next vector streams in while the current one is computed.
      ``i_stream.ready`` is low only while all banks are full. More banks let a bursty
      producer (a sliding-window unit between frames) run ahead by ``B - 1`` vectors.
    * **Compute.** For ``nf`` in ``0..NF-1`` and ``sf`` in ``0..SF-1``, one cycle each, it reads
      slice ``sf % r`` of buffer word ``sf // r`` and weight word ``nf * SF + sf`` of every PE
      (synchronous reads), XNORs them into a register, counts with a pipelined
      :class:`Popcount`, and accumulates. The cycle after ``sf = SF - 1`` the accumulators
      hold the fold's sums and a synchronous threshold read has the fold's thresholds: they
      are compared and the result word is queued, so the adder and the compare sit in
      different cycles. Each input vector is
      read once from the stream and reused from the buffer for all ``NF`` folds. The bank is
      released right after its last read, so the next vector starts without a gap.
    * **Back-pressure by credits.** Result words go into an output queue of
      ``Q = ceil((popcount_latency + 3) / SF) + 2`` words (``queue_depth``). The read stage and
      the popcount pipeline never stall, so no enable fans out to their registers or to the
      memories' read ports; instead a fold's last beat is issued only while the queued words
      plus the words still in the pipeline leave the queue a free entry. ``Q`` covers the
      words a ready consumer can have in flight, so it never blocks the issue.

    A frame is ``V`` input vectors (``vectors``): 1 for a dense layer, the ``OH * OW`` windows
    of a convolution, which the unit computes one after another; its output words then come
    out as ``(oy, ox, channel)``, channel innermost, the order of the model's bit maps.

    Timing
    ------
    latency : int
        ``D + SF + popcount_latency(SIMD) + 3``: the first vector is collected in ``D``
        cycles, issue starts the cycle after, the first fold takes ``SF`` issue cycles, one
        cycle of memory read, one register after the XNOR, the popcount pipeline, the
        accumulator, and the compare into the output queue.
    cycles_per_frame : int
        ``V * NF * SF`` (the collector needs only ``D <= SF`` cycles per vector).

    Parameters
    ----------
    weights : ndarray (MH, MW) of 0/1
    thresholds : ndarray (MH,) of int or None
        ``None`` makes this the output layer (scores instead of bits).
    pe, simd : int
        Folding; ``PE | MH`` and ``SIMD | MW``.
    in_width : int or None
        Bits per input word, a multiple of ``E * SIMD`` dividing ``E * MW`` (``E`` = 8 bits per
        element with ``pixels8``, else 1); default ``E * SIMD``.
    name : str
        Layer name for error messages.
    vectors : int
        ``V``, input vectors per frame (>= 1).
    pixels8 : bool
        8-bit pixel inputs with add/subtract lanes (needs thresholds).
    banks : int
        ``B >= 2``, input vectors the collector can hold.
    """

    def __init__(self, weights, thresholds, pe, simd, in_width=None, name="?", vectors=1,
                 pixels8=False, banks=2):
        weights = np.asarray(weights, dtype=np.uint8)
        self.mh, self.mw = weights.shape
        check_folding(self.mh, self.mw, pe, simd, name)
        self.pixels8 = bool(pixels8)
        self.element_bits = e = PIXEL_BITS if self.pixels8 else 1
        if self.pixels8 and thresholds is None:
            raise ValueError(f"layer {name}: a pixels8 MVTU needs thresholds")
        in_width = e * simd if in_width is None else in_width
        if in_width % (e * simd) or (e * self.mw) % in_width:
            raise ValueError(
                f"layer {name}: input word width must be a multiple of {e}*SIMD dividing "
                f"{e}*MW (in_width={in_width}, SIMD={simd}, MW={self.mw})")
        if banks < 2:
            raise ValueError(f"layer {name}: the input buffer needs >= 2 banks (banks={banks})")
        self.banks = banks
        if vectors < 1:
            raise ValueError(f"layer {name}: vectors per frame must be >= 1 (vectors={vectors})")
        self.weights = weights
        self.vectors = vectors
        self.thresholds = None if thresholds is None else np.asarray(thresholds, dtype=np.int64)
        self.pe, self.simd, self.in_width = pe, simd, in_width
        self.nf, self.sf = self.mh // pe, self.mw // simd
        self.depth = e * self.mw // in_width
        self.score_bits = self.mw.bit_length()
        self.lane_bits = 1 if self.thresholds is not None else self.score_bits
        # Threshold slots: two's complement for [-255 MW, 255 MW + 1] with pixels8.
        self.threshold_bits = (0 if self.thresholds is None else
                               (255 * self.mw + 1).bit_length() + 1 if self.pixels8
                               else (self.mw + 1).bit_length())
        self.out_width = pe * self.lane_bits
        # Threshold outputs are a word of activation bits; scores are one number per PE.
        self.out_layout = (unsigned(self.out_width) if self.thresholds is not None
                           else data.ArrayLayout(unsigned(self.score_bits), pe))
        self.popcount_latency = popcount_latency(simd)
        # A word is queued popcount_latency + 3 cycles after its last beat issues; with one
        # fold per SF cycles that many are in flight, and two more entries keep a ready
        # consumer from ever blocking the issue.
        self.queue_depth = -(-(self.popcount_latency + 3) // self.sf) + 2
        self.cycles_per_frame = vectors * self.nf * self.sf
        self.latency = self.depth + self.sf + self.popcount_latency + 3
        super().__init__({
            "i_stream": In(stream.Signature(in_width)),
            "o_stream": Out(stream.Signature(self.out_layout)),
        })

    def frame_times(self, in_times):
        """Output times of one frame offered at ``in_times`` to an idle unit, consumer ready.

        ``in_times`` holds the ``V * D`` offer times. Word ``k`` of vector ``v`` is taken at
        ``a = max(in_time, a_prev + 1, free_v)`` where ``free_v = s_{v-B} + NF * SF`` is the
        cycle bank ``v % B`` is released (0 for ``v < B``); vector ``v`` issues from
        ``s_v = max(a_last(v) + 1, s_{v-1} + NF * SF)``; its output word ``nf`` leaves at
        ``s_v + (nf + 1) * SF + popcount_latency + 3``. For one vector: ``in_times[-1] + 1 +
        (nf + 1) * SF + popcount_latency + 3``.
        """
        in_times = list(in_times)
        work = self.nf * self.sf
        starts, out, taken = [], [], -1
        for v in range(self.vectors):
            free = starts[v - self.banks] + work if v >= self.banks else 0
            for t in in_times[v * self.depth:(v + 1) * self.depth]:
                taken = max(t, taken + 1, free)
            start = taken + 1 if v == 0 else max(taken + 1, starts[v - 1] + work)
            starts.append(start)
            out.extend(start + (nf + 1) * self.sf + self.popcount_latency + 3
                       for nf in range(self.nf))
        return out

    def weight_memory(self, pe, init, width):
        """Create one weight memory of PE ``pe``: ``NF * SF`` words of ``width`` bits, ``init``.

        The one place weight storage is made; override it to use another kind of memory
        (for example one written at run time). Only a synchronous read port is taken from it.
        ``width`` is one entry of :meth:`weight_slices` (``SIMD`` unless the PE's weights are
        split into column slices).
        """
        return memory.Memory(shape=unsigned(width), depth=self.nf * self.sf, init=init)

    def weight_slices(self):
        """Widths of the column slices of a PE's weight word (summing to ``SIMD``).

        A PE whose weights exceed ``WEIGHT_SLICE_BITS`` (``SIMD * NF * SF`` bits) has them in
        ``n = ceil(SIMD * NF * SF / WEIGHT_SLICE_BITS)`` memories of about ``SIMD / n``
        columns, each behind its own address counter, so that no address net runs to more
        than a few block RAMs. Each width but the last is a multiple of
        ``WEIGHT_SLICE_QUANTUM``, so the slices take the same block RAMs as the whole word.
        """
        depth = self.nf * self.sf
        count = -(-self.simd * depth // WEIGHT_SLICE_BITS)
        if count <= 1:
            return [self.simd]
        quantum = WEIGHT_SLICE_QUANTUM
        width = -(-self.simd // (count * quantum)) * quantum
        widths = [width] * (self.simd // width)
        return widths + ([self.simd % width] if self.simd % width else [])

    def weight_offsets(self):
        """Address offset of each weight memory, ``[pe][slice]``: the memory stores weight word
        ``a`` at ``(a + o) mod (NF * SF)`` and is read by its own address counter, which runs
        ``o`` ahead of the shared one.

        ``o = (pe * n + slice) mod (NF * SF)`` for ``n`` slices per PE, so the counters are
        different registers that synthesis cannot merge: each drives one memory, and a small
        memory built from logic (a few words per PE) is decoded per PE instead of one address
        net fanning out to every PE's decoder and the decoders sharing logic across the die.
        An override returns all zeros where the stored layout is fixed from outside (weights
        written at run time).
        """
        n, depth = len(self.weight_slices()), self.nf * self.sf
        return [[(pe * n + j) % depth for j in range(n)] for pe in range(self.pe)]

    def elaborate(self, platform):
        m = Module()
        o = self.o_stream
        e = self.element_bits
        nf_n, sf_n, d, r = self.nf, self.sf, self.depth, self.in_width // (e * self.simd)
        b_n = self.banks
        read, full, next_bank = self._input_buffer(m)
        weight_ports, tread, tbits = self._memories(m)

        # Popcount pipeline. It never stalls: its consumer (the accumulator) is always ready,
        # so no enable fans out to its registers or to the weight memories' read ports.
        nf_bits = (nf_n - 1).bit_length()
        if self.pixels8:
            m.submodules.pixeldot = pc = PixelDot(self.simd, self.pe, nf_bits + 2)
        else:
            m.submodules.popcount = pc = Popcount(self.simd, self.pe, nf_bits + 2)
        m.d.comb += pc.o_stream.ready.eq(1)

        # Output queue with credits: a fold's last beat issues only while the words already
        # queued plus those still in the pipeline leave it a free entry.
        # ``reserved`` = words queued + words in the pipeline, kept as one counter (up on a
        # fold's last beat, down on a word leaving), so that the issue decision compares a
        # register with a constant instead of adding the queue's level first.
        m.submodules.out_queue = queue = SyncFIFO(width=self.out_width, depth=self.queue_depth)
        reserved = Signal(range(self.queue_depth + 1))

        # Issue stage.
        rbank = Signal(range(b_n))
        nf, sf, part, entry = (Signal(range(nf_n)), Signal(range(sf_n)), Signal(range(r)),
                               Signal(range(d)))
        last_beat = sf == sf_n - 1
        go = Signal()
        m.d.comb += go.eq(full.bit_select(rbank, 1)
                          & (~last_beat | (reserved < self.queue_depth)))
        m.d.comb += [read.en.eq(1), read.addr.eq(rbank * d + entry)]
        # Weight address counters, one per distinct offset (see ``weight_offsets``): the
        # counter of offset o holds (nf * SF + sf + o) mod (NF * SF).
        waddr = {}
        for ports, offsets in zip(weight_ports, self.weight_offsets(), strict=True):
            for port, offset in zip(ports, offsets, strict=True):
                if offset not in waddr:
                    waddr[offset] = Signal(range(nf_n * sf_n), init=offset,
                                           name=f"waddr{offset}")
                m.d.comb += [port.en.eq(1), port.addr.eq(waddr[offset])]
        with m.If(go):
            m.d.sync += [a.eq(Mux(a == nf_n * sf_n - 1, 0, a + 1)) for a in waddr.values()]
            with m.If(part == r - 1):
                m.d.sync += [part.eq(0), entry.eq(Mux(entry == d - 1, 0, entry + 1))]
            with m.Else():
                m.d.sync += part.eq(part + 1)
            with m.If(last_beat):
                m.d.sync += sf.eq(0)
                with m.If(nf == nf_n - 1):
                    m.d.sync += [nf.eq(0), full.bit_select(rbank, 1).eq(0),
                                 rbank.eq(next_bank(rbank))]
                with m.Else():
                    m.d.sync += nf.eq(nf + 1)
            with m.Else():
                m.d.sync += sf.eq(sf + 1)

        # Read stage: XNOR of the buffered slice with each PE's weight word.
        valid1 = Signal()
        part1 = Signal(range(r), reset_less=True)
        tag1 = Signal(nf_bits + 2, reset_less=True)
        m.d.sync += [valid1.eq(go), part1.eq(part), tag1.eq(Cat(nf, sf == 0, last_beat))]
        x = read.data.word_select(part1, e * self.simd)
        weight_words = [Cat(*(port.data for port in ports)) for ports in weight_ports]
        if self.pixels8:  # the pixels once, then each PE's weight bits
            lanes_in = Cat(x, *weight_words, tag1)
        else:
            lanes_in = Cat(*(~(x ^ word) for word in weight_words), tag1)
        # Registered before the popcount: the memories' clock-to-out and the routing from
        # them end here, not in the popcount's first adders.
        valid2, lanes2 = Signal(), Signal(len(lanes_in), reset_less=True)
        m.d.sync += [valid2.eq(valid1), lanes2.eq(lanes_in)]
        m.d.comb += [pc.i_stream.valid.eq(valid2), pc.i_stream.payload.eq(lanes2)]

        self._accumulate(m, pc, tread, tbits, nf_bits, queue)
        m.d.sync += reserved.eq(reserved + (go & last_beat) - (o.valid & o.ready))
        m.d.comb += [o.valid.eq(queue.r_rdy), o.payload.eq(queue.r_data),
                     queue.r_en.eq(o.ready)]
        return m

    def _input_buffer(self, m):
        """The input buffer, a ring of ``B`` banks of ``D`` words, filled from ``i_stream``.

        Returns its read port, the ``full`` flag per bank (set by the writer when a bank's last
        word arrives, cleared by the issue stage when it is done) and the bank successor."""
        i, d, b_n = self.i_stream, self.depth, self.banks
        m.submodules.buffer = buffer = memory.Memory(
            shape=unsigned(self.in_width), depth=b_n * d, init=[])
        write, read = buffer.write_port(), buffer.read_port()
        full = Signal(b_n)
        wbank, wptr = Signal(range(b_n)), Signal(range(d))

        def next_bank(bank):
            return Mux(bank == b_n - 1, 0, bank + 1)

        m.d.comb += [
            i.ready.eq(~full.bit_select(wbank, 1)),
            write.addr.eq(wbank * d + wptr),
            write.data.eq(i.payload),
            write.en.eq(i.valid & i.ready),
        ]
        with m.If(i.valid & i.ready):
            with m.If(wptr == d - 1):
                m.d.sync += [wptr.eq(0), full.bit_select(wbank, 1).eq(1),
                             wbank.eq(next_bank(wbank))]
            with m.Else():
                m.d.sync += wptr.eq(wptr + 1)
        return read, full, next_bank

    def _memories(self, m):
        """The weight memories of each PE, one per column slice (:meth:`weight_memory`,
        :meth:`weight_slices`, rotated by :meth:`weight_offsets`) and, for a thresholded
        layer, the threshold memory. Returns the weight read ports per PE (low columns
        first), the threshold read port (None) and the bits per threshold slot (0)."""
        words = mvtu_weight_words(self.weights, self.pe, self.simd)
        widths = self.weight_slices()
        lows = np.cumsum([0] + widths)
        weight_ports = []
        for pe, offsets in enumerate(self.weight_offsets()):
            ports = []
            for j, (width, offset) in enumerate(zip(widths, offsets, strict=True)):
                columns = words[pe][:, lows[j]:lows[j] + width]
                mem = self.weight_memory(pe, words_to_ints(np.roll(columns, offset, axis=0)),
                                         width)
                m.submodules[f"weights{pe}" if len(widths) == 1 else f"weights{pe}_{j}"] = mem
                ports.append(mem.read_port())
            weight_ports.append(ports)
        if self.thresholds is None:
            return weight_ports, None, 0
        tbits = self.threshold_bits
        slots = mvtu_thresholds(self.thresholds, self.pe) & ((1 << tbits) - 1)
        init = [sum(int(slots[pe, nf]) << (pe * tbits) for pe in range(self.pe))
                for nf in range(self.nf)]
        # Logic, not block RAM: a few words, read synchronously into registers.
        m.submodules.thresholds = tmem = memory.Memory(
            shape=unsigned(self.pe * tbits), depth=self.nf, init=init,
            attrs={"rom_style": "logic"})
        tread = tmem.read_port()
        return weight_ports, tread, tbits

    def _accumulate(self, m, pc, tread, tbits, nf_bits, queue):
        """Per PE, add the popcounts of a fold, then compare with the fold's threshold (or keep
        the score) and push the fold's word into ``queue``."""
        tag2 = pc.o_stream.payload.tag
        nf2, first2, last2 = tag2[:nf_bits], tag2[nf_bits], tag2[nf_bits + 1]
        lanes = []
        acc_shape = (signed((255 * self.mw).bit_length() + 1) if self.pixels8
                     else unsigned(self.score_bits))
        for pe in range(self.pe):
            acc = Signal(acc_shape, name=f"acc{pe}", reset_less=True)
            part = pc.o_stream.payload.lanes[pe]
            threshold = None if tread is None else tread.data[pe * tbits:(pe + 1) * tbits]
            if self.pixels8:
                part, threshold = part.as_signed(), threshold.as_signed()
            with m.If(pc.o_stream.valid):
                m.d.sync += acc.eq(Mux(first2, 0, acc) + part)
            if tread is None:
                lanes.append(acc[:self.score_bits])
            else:
                lanes.append(acc >= threshold)
        if tread is not None:
            m.d.comb += tread.addr.eq(nf2)
        # The cycle after a fold's last count: its sums in the accumulators, its thresholds read.
        push = Signal()
        m.d.sync += push.eq(pc.o_stream.valid & last2)
        m.d.comb += [queue.w_en.eq(push), queue.w_data.eq(Cat(*lanes))]
