"""Gateware end of the host link: request frames in, accelerator in the middle, replies out.

The frame format is :mod:`bnnhw.boards.protocol` (and ``docs/host-link.md``). The link is
board-agnostic; a board top puts a UART on ``i_bytes`` / ``o_bytes`` and the accelerator on
``acc_in`` / ``acc_out``.

Request parser (one byte per cycle at most)::

    HUNT -SYNC0-> SYNC1 -SYNC1-> CMD -> LEN_LO -> LEN_HI -+-> PAYLOAD_RAW  -+-> CHECK -> HUNT
                                                          +-> PAYLOAD_BITS -+
                                                          +-> PAYLOAD_LOAD -+
                                                          +-> CHECK (IDENTIFY)

* A header whose ``(CMD, LEN)`` is not one of IDENTIFY/0, CLASSIFY_RAW/``pixels``,
  CLASSIFY_BITS/``pixels * L / 8`` or (with ``load_weights``) LOAD_WEIGHTS/``4 + 2 k`` with
  ``2 k <= MAX_WEIGHT_CHUNK`` sends the parser back to HUNT without a reply; so does a
  bad CRC on IDENTIFY. Garbage therefore produces no replies. (Unlike the host decoder, the
  gateware cannot rescan consumed bytes: it resumes hunting at the next byte.)
* Pixels stream into the accelerator as they arrive, packed ``P`` per word (pixel
  ``w * P + j`` in bits ``[8j, 8j + 8)``), so the CRC is known only after the last pixel. A
  classify frame with a bad CRC still yields one accelerator result, which is replied with
  status BAD_CRC (the host discards it).
* If no byte arrives for ``timeout_cycles`` inside a frame, a header is dropped; a classify
  payload is completed with zero pixels and answered with status TIMEOUT, so the accelerator
  never holds a partial frame.
* CLASSIFY_BITS: each byte holds ``8 / L`` pixels of ``L`` thermometer bits. Pixel ``j``
  with ``c`` ones is rebuilt as ``thresholds[c - 1]`` (0 when ``c = 0``), which the
  accelerator's quantizer maps back to exactly ``c`` ones.

* LOAD_WEIGHTS: after the 4 offset bytes, every second data byte writes one 16-bit word
  (first byte low) on ``w_addr`` / ``w_data`` / ``w_en`` (one-cycle pulse), at word
  ``offset / 2 + k`` (low 16 bits). Words are written as they arrive, so a chunk with a bad
  CRC has already been written: the reply says BAD_CRC and the host resends the chunk. The
  first data word clears ``weights_loaded``; a request without data bytes (commit) with a
  good CRC sets it. Bit 2 of the identity flags byte shows ``weights_loaded``. Loading is
  meant for an idle accelerator: a write takes the SPRAM's port from a running frame.

Replies leave in request order: the parser queues a token (command, status) per reply and
the serialiser pairs each classify token with the next accelerator output word.

Overruns: the board's receiver cannot hold bytes back, so when the link is busy (its token
queue full while replies drain at the line rate) a flood of requests loses bytes. The board
top pulses ``rx_lost`` for each byte it had to drop; the link counts them in ``overruns``
(saturating at 0xFFFF), sends the next reply with status OVERRUN instead of its own, and the
host resends what it has not had answered.

Timing contract (``tests/test_boards_link.py``): ``acc_in.valid`` rises ``latency = 1`` cycle
after the edge that accepts a word's last pixel byte; a request of ``B`` bytes offered one
per cycle is consumed in ``B`` cycles while the accelerator keeps ``acc_in.ready`` high
(``cycles_per_frame = request_bytes_raw`` for CLASSIFY_RAW); the first reply byte is offered
``reply_latency = 1`` cycle after the edge that takes the accelerator's output word.
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .protocol import (
    IDENTITY_FLAGS_INDEX,
    MAX_WEIGHT_CHUNK,
    OVERHEAD_BYTES,
    REPLY,
    SYNC,
    Command,
    Status,
    crc8,
)

KIND_IDENTIFY, KIND_RAW, KIND_BITS, KIND_LOAD = 0, 1, 2, 3
TOKEN_DEPTH = 8


def crc8_next(crc: Value, byte: Value) -> Value:
    """CRC-8 (polynomial 0x07) of ``crc`` extended by ``byte``.

    The update is linear over GF(2): with ``v = crc ^ byte``, output bit ``i`` is the XOR of
    the bits ``v[j]`` for which bit ``i`` of ``crc8(1 << j)`` (:func:`protocol.crc8` of one
    byte) is set. That gives eight small XOR trees instead of eight chained shift steps.
    """
    v = (crc ^ byte)[:8]
    columns = [crc8(bytes((1 << j,))) for j in range(8)]
    out = []
    for i in range(8):
        taps = [v[j] for j in range(8) if columns[j] >> i & 1]
        bit = taps[0]
        for tap in taps[1:]:
            bit = bit ^ tap
        out.append(bit)
    return Cat(*out)


class Link(wiring.Component):
    """Host-link protocol engine.

    Parameters
    ----------
    pixels : int
        Pixels per image (the CLASSIFY_RAW payload length).
    pixels_per_word : int
        ``P``; must divide ``pixels``.
    out_width : int
        Width of the accelerator's output word; replies carry ``ceil(out_width / 8)`` bytes.
    class_bits : int
        The class sits in bits ``[0, class_bits)`` of the output word (``last_class``).
    out_layout : amaranth.lib.data.Layout or None
        The output word's layout (the accelerator's
        :func:`~bnnhw.gateware.labelselect.result_layout`), so that ``acc_out`` connects to
        its stream; ``None`` for a plain ``out_width``-bit word. The link sends its raw bits.
    identity : bytes
        The IDENTIFY record (:meth:`bnnhw.boards.protocol.Identity.encode`).
    bits_pixel_values : tuple of int or None
        ``(0, t_0, ..., t_{L-1})`` clamped to 255: the pixel rebuilt from ``c`` ones. ``None``
        disables CLASSIFY_BITS.
    timeout_cycles : int
        Idle cycles inside a frame before it is abandoned.
    load_weights : bool
        Accept LOAD_WEIGHTS (drive the weight write port).

    Attributes
    ----------
    latency, reply_latency, cycles_per_frame : int
        See the module docstring.
    request_bytes_raw, request_bytes_bits, reply_bytes : int
        Frame sizes on the wire (``request_bytes_bits`` is 0 without CLASSIFY_BITS).

    Ports besides the streams: ``last_class`` / ``last_class_valid`` hold the class of the
    last OK classify reply; ``activity`` pulses for one cycle when a reply has been sent;
    ``error`` is sticky after a BAD_CRC, TIMEOUT or OVERRUN reply; ``rx_lost`` (in) pulses
    once per byte the receiver dropped and ``overruns`` counts those pulses. ``w_addr``,
    ``w_data``, ``w_en`` and ``weights_loaded`` are the LOAD_WEIGHTS write port and state.
    """

    def __init__(self, *, pixels, pixels_per_word, out_width, class_bits, identity,
                 out_layout=None, bits_pixel_values=None, timeout_cycles=1 << 20,
                 load_weights=False):
        if pixels % pixels_per_word:
            raise ValueError(f"pixels per word ({pixels_per_word}) must divide the image size "
                             f"({pixels})")
        if len(identity) > 0xFFFE:
            raise ValueError(f"identity record of {len(identity)} bytes is too long")
        self.pixels = pixels
        self.pixels_per_word = pixels_per_word
        self.out_width = out_width
        self.class_bits = class_bits
        self.identity = bytes(identity)
        self.result_bytes = -(-out_width // 8)
        self.bits_pixel_values = bits_pixel_values
        if bits_pixel_values is not None:
            levels = len(bits_pixel_values) - 1
            if levels not in (1, 2, 4, 8) or (pixels * levels) % 8:
                raise ValueError(f"CLASSIFY_BITS needs levels in (1, 2, 4, 8) and whole bytes "
                                 f"(pixels={pixels}, levels={levels})")
            self.levels = levels
            self.bits_bytes = pixels * levels // 8
        else:
            self.levels = 0
            self.bits_bytes = 0
        if timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be >= 1, got {timeout_cycles}")
        self.timeout_cycles = timeout_cycles
        self.load_weights = bool(load_weights)
        self.request_bytes_raw = OVERHEAD_BYTES + pixels
        self.request_bytes_bits = OVERHEAD_BYTES + self.bits_bytes if self.bits_bytes else 0
        self.reply_bytes = OVERHEAD_BYTES + 1 + self.result_bytes
        self.latency = 1
        self.reply_latency = 1
        self.cycles_per_frame = self.request_bytes_raw
        super().__init__({
            "i_bytes": In(stream.Signature(8)),
            "o_bytes": Out(stream.Signature(8)),
            "acc_in": Out(stream.Signature(8 * pixels_per_word)),
            "acc_out": In(stream.Signature(out_width if out_layout is None else out_layout)),
            "last_class": Out(class_bits),
            "last_class_valid": Out(1),
            "activity": Out(1),
            "error": Out(1),
            "rx_lost": In(1),
            "overruns": Out(16),
            "w_addr": Out(16),
            "w_data": Out(16),
            "w_en": Out(1),
            "weights_loaded": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = SimpleNamespace(b=self.i_bytes)
        self._packer(m, n)
        # Reply tokens: (kind, status, weights_loaded) per reply, in request order. The parser
        # decides a token into a register (``tok_push``, ``tok_q``) and the queue takes it from
        # there, so the queue's write enables do not wait for the parser's decision logic.
        m.submodules.tokens = n.tokens = SyncFIFOBuffered(width=5, depth=TOKEN_DEPTH)
        n.tok_kind, n.tok_status = Signal(2, name="tok_kind"), Signal(2, name="tok_status")
        n.tok_push, tok_q = Signal(name="tok_push"), Signal(5, name="tok_q")
        n.tok_free = ~n.tok_push
        n.tok_write = Signal(name="tok_write")
        m.d.comb += [n.tokens.w_en.eq(n.tok_push), n.tokens.w_data.eq(tok_q)]
        with m.If(n.tok_push & n.tokens.w_rdy):
            m.d.sync += n.tok_push.eq(0)
        with m.If(n.tok_write):
            m.d.sync += [n.tok_push.eq(1),
                         tok_q.eq(Cat(n.tok_kind, n.tok_status, self.weights_loaded))]
        self._parser(m, n)
        self._serialiser(m, n)
        return m

    def _packer(self, m, n):
        """Pixel packer: ``P`` pixels (``n.pix_valid``/``n.pix_data``) -> one accelerator
        word; ``n.pix_ready`` is its ready."""
        P = self.pixels_per_word
        n.pix_valid, n.pix_data = Signal(name="pix_valid"), Signal(8, name="pix_data")
        word = Signal(8 * P)
        count = Signal(range(P + 1))
        full = Signal()
        n.pix_ready = ~full | self.acc_in.ready
        m.d.comb += [self.acc_in.valid.eq(full), self.acc_in.payload.eq(word)]
        with m.If(full & self.acc_in.ready):
            m.d.sync += full.eq(0)
        with m.If(n.pix_valid & n.pix_ready):
            m.d.sync += word.eq((word >> 8) | (n.pix_data << (8 * (P - 1))))
            with m.If(count == P - 1):
                m.d.sync += [count.eq(0), full.eq(1)]
            with m.Else():
                m.d.sync += count.eq(count + 1)

    def _parser(self, m, n):
        """Request parser: its signals, the CRC, the idle timer and the FSM."""
        b = n.b
        n.cmd, n.length = Signal(8, name="cmd"), Signal(16, name="length")
        n.crc = Signal(8, name="crc")
        n.crc_good = Signal(name="crc_good")
        n.bytes_left = Signal(range(max(self.pixels, self.bits_bytes, 4 + MAX_WEIGHT_CHUNK)
                                    + 1), name="bytes_left")
        n.pixels_left = Signal(range(self.pixels + 1), name="pixels_left")
        idle = Signal(range(self.timeout_cycles + 1))
        n.timeout, n.kind = Signal(name="timeout"), Signal(2, name="kind")
        m.d.comb += n.timeout.eq(idle == self.timeout_cycles)

        # CLASSIFY_BITS expander: one byte -> 8 / L pixels, one per cycle.
        n.levels = max(self.levels, 1)
        n.exp_bits, n.exp_left = Signal(8, name="exp_bits"), Signal(range(9), name="exp_left")
        if self.bits_pixel_values is not None:
            lut = Array(Const(min(v, 255), 8) for v in self.bits_pixel_values)
            n.exp_pixel = lut[sum(n.exp_bits[i] for i in range(n.levels))]
        else:
            n.exp_pixel = Const(0, 8)

        # LOAD_WEIGHTS: offset bytes 0-2 (byte 3 is beyond the 16-bit word address), the low
        # byte of the next word, the position in the request, and a commit (no data) flag.
        n.offset, n.low = Signal(24, name="offset"), Signal(8, name="low")
        n.load_pos, n.commit = Signal(range(6), name="load_pos"), Signal(name="commit")
        m.d.sync += self.w_en.eq(0)
        with m.If(self.w_en):
            m.d.sync += self.w_addr.eq(self.w_addr + 1)

        n.accept = Signal(name="accept")
        m.d.comb += b.ready.eq(n.accept)
        n.taken = b.valid & n.accept
        with m.If(n.taken):
            m.d.sync += n.crc.eq(crc8_next(n.crc, b.payload))

        with m.FSM(name="parser"):
            self._header_states(m, n)
            self._payload_states(m, n)
            self._end_states(m, n)

        with m.If(b.valid):
            m.d.sync += idle.eq(0)
        with m.Elif(~n.timeout):
            m.d.sync += idle.eq(idle + 1)

    def _header_states(self, m, n):
        """HUNT, SYNC1, CMD, LEN_LO, LEN_HI: find a frame and check its (CMD, LEN)."""
        b, taken, timeout = n.b, n.taken, n.timeout
        with m.State("HUNT"):
            m.d.comb += n.accept.eq(1)
            with m.If(taken & (b.payload == SYNC[0])):
                m.next = "SYNC1"
        with m.State("SYNC1"):
            m.d.comb += n.accept.eq(1)
            with m.If(taken):
                with m.If(b.payload == SYNC[1]):
                    m.d.sync += n.crc.eq(0)
                    m.next = "CMD"
                with m.Elif(b.payload != SYNC[0]):
                    m.next = "HUNT"
            with m.Elif(timeout):
                m.next = "HUNT"
        for state, target, following in (("CMD", n.cmd, "LEN_LO"),
                                         ("LEN_LO", n.length[:8], "LEN_HI")):
            with m.State(state):
                m.d.comb += n.accept.eq(1)
                with m.If(taken):
                    m.d.sync += target.eq(b.payload)
                    m.next = following
                with m.Elif(timeout):
                    m.next = "HUNT"
        with m.State("LEN_HI"):
            m.d.comb += n.accept.eq(1)
            full_len = Cat(n.length[:8], b.payload)
            cmd = n.cmd
            with m.If(taken):
                with m.If((cmd == Command.IDENTIFY) & (full_len == 0)):
                    m.d.sync += n.kind.eq(KIND_IDENTIFY)
                    m.next = "CHECK"
                with m.Elif((cmd == Command.CLASSIFY_RAW) & (full_len == self.pixels)):
                    m.d.sync += [n.kind.eq(KIND_RAW), n.bytes_left.eq(self.pixels),
                                 n.pixels_left.eq(self.pixels)]
                    m.next = "PAYLOAD_RAW"
                if self.bits_bytes:
                    with m.Elif((cmd == Command.CLASSIFY_BITS) & (full_len == self.bits_bytes)):
                        m.d.sync += [n.kind.eq(KIND_BITS), n.bytes_left.eq(self.bits_bytes),
                                     n.pixels_left.eq(self.pixels)]
                        m.next = "PAYLOAD_BITS"
                if self.load_weights:
                    with m.Elif((cmd == Command.LOAD_WEIGHTS) & (full_len >= 4)
                                & (full_len <= 4 + MAX_WEIGHT_CHUNK) & ~full_len[0]):
                        m.d.sync += [n.kind.eq(KIND_LOAD), n.bytes_left.eq(full_len),
                                     n.commit.eq(full_len == 4), n.load_pos.eq(0)]
                        m.next = "PAYLOAD_LOAD"
                with m.Else():
                    m.next = "HUNT"
            with m.Elif(timeout):
                m.next = "HUNT"

    def _payload_states(self, m, n):
        """PAYLOAD_LOAD, PAYLOAD_RAW, PAYLOAD_BITS: take the payload bytes."""
        b, taken, timeout = n.b, n.taken, n.timeout
        bytes_left, pixels_left, load_pos = n.bytes_left, n.pixels_left, n.load_pos
        with m.State("PAYLOAD_LOAD"):
            m.d.comb += n.accept.eq(1)
            with m.If(taken):
                m.d.sync += bytes_left.eq(bytes_left - 1)
                with m.If(load_pos < 3):
                    m.d.sync += [load_pos.eq(load_pos + 1),
                                 n.offset.eq(Cat(n.offset[8:], b.payload))]
                with m.Elif(load_pos == 3):
                    # Bits 1-16 of the offset (bytes 0-2 now) are the word address.
                    m.d.sync += [load_pos.eq(4), self.w_addr.eq(n.offset[1:17])]
                with m.Elif(load_pos == 4):
                    m.d.sync += [load_pos.eq(5), n.low.eq(b.payload)]
                with m.Else():
                    m.d.sync += [load_pos.eq(4), self.w_data.eq(Cat(n.low, b.payload)),
                                 self.w_en.eq(1), self.weights_loaded.eq(0)]
                with m.If(bytes_left == 1):
                    m.next = "CHECK"
            with m.Elif(timeout):
                m.next = "CHECK"
        with m.State("PAYLOAD_RAW"):
            m.d.comb += [n.accept.eq(n.pix_ready), n.pix_valid.eq(b.valid),
                         n.pix_data.eq(b.payload)]
            with m.If(taken):
                m.d.sync += [bytes_left.eq(bytes_left - 1), pixels_left.eq(pixels_left - 1)]
                with m.If(bytes_left == 1):
                    m.next = "CHECK"
            with m.Elif(timeout):
                m.next = "PAD"
        with m.State("PAYLOAD_BITS"):
            expanding = n.exp_left != 0
            m.d.comb += [n.pix_valid.eq(expanding), n.pix_data.eq(n.exp_pixel),
                         n.accept.eq(~expanding & (bytes_left != 0))]
            with m.If(expanding & n.pix_ready):
                m.d.sync += [n.exp_bits.eq(n.exp_bits >> n.levels),
                             n.exp_left.eq(n.exp_left - 1), pixels_left.eq(pixels_left - 1)]
            with m.If(taken):
                m.d.sync += [n.exp_bits.eq(b.payload), n.exp_left.eq(8 // n.levels),
                             bytes_left.eq(bytes_left - 1)]
            with m.If((bytes_left == 0) & ~expanding):
                m.next = "CHECK"
            with m.Elif(timeout & ~expanding):
                m.next = "PAD"

    def _end_states(self, m, n):
        """PAD (a timed-out classify completed with zero pixels) and CHECK (the CRC byte,
        compared into a register), then REPLY: each queues the reply token."""
        kind, free = n.kind, n.tok_free
        with m.State("PAD"):
            m.d.comb += [n.pix_valid.eq(n.pixels_left != 0), n.pix_data.eq(0)]
            with m.If((n.pixels_left != 0) & n.pix_ready):
                m.d.sync += n.pixels_left.eq(n.pixels_left - 1)
            with m.If((n.pixels_left == 0) & free):
                m.d.comb += [n.tok_write.eq(1), n.tok_kind.eq(kind),
                             n.tok_status.eq(Status.TIMEOUT)]
                m.next = "HUNT"
        with m.State("CHECK"):
            # The CRC compare is registered; REPLY decides the token a cycle later, so the
            # received byte does not reach the token register within a cycle.
            m.d.comb += [n.accept.eq(1), n.tok_kind.eq(kind)]
            with m.If(n.taken):
                m.d.sync += n.crc_good.eq(n.b.payload == n.crc)
                m.next = "REPLY"
            with m.Elif(n.timeout & free):
                m.d.comb += [n.tok_write.eq(kind != KIND_IDENTIFY),
                             n.tok_status.eq(Status.TIMEOUT)]
                m.next = "HUNT"
        with m.State("REPLY"):
            good = n.crc_good
            m.d.comb += n.tok_kind.eq(kind)
            with m.If(free):
                m.d.comb += [n.tok_status.eq(Mux(good, Status.OK, Status.BAD_CRC)),
                             n.tok_write.eq((kind != KIND_IDENTIFY) | good)]
                with m.If((kind == KIND_LOAD) & n.commit & good):
                    m.d.sync += self.weights_loaded.eq(1)
                m.next = "HUNT"

    def _serialiser(self, m, n):
        """Reply serialiser: pairs each token with its reply (a classify one with the next
        accelerator word) and sends the reply bytes, registered, with their CRC."""
        tokens = n.tokens
        n.result = Signal(8 * self.result_bytes, name="result")
        n.r_kind, n.r_status = Signal(2, name="r_kind"), Signal(2, name="r_status")
        n.r_loaded = Signal(name="r_loaded")  # weights_loaded when the request was answered
        n.index = Signal(range(OVERHEAD_BYTES + 1 + max(len(self.identity),
                                                        self.result_bytes)), name="index")
        n.out_crc = Signal(8, name="out_crc")
        n.at_last = Signal(name="at_last")
        byte, last = self._reply_byte(m, n)
        o, index, result, r_kind, r_status = (self.o_bytes, n.index, n.result, n.r_kind,
                                              n.r_status)
        # The byte is registered before it leaves and before the CRC takes it, so the index
        # decode and the CRC sit in different cycles; ``fresh`` holds o.valid low for the
        # cycle after the index (or the reply) changes. A byte per UART frame leaves time.
        byte_q, fresh = Signal(8, name="byte_q"), Signal(name="fresh")
        m.d.sync += [byte_q.eq(byte), fresh.eq(1)]
        # Where the index stands, kept as flags that move with it, so that the enables of
        # the CRC, the result shifter and the FSM do not wait for comparisons of the index:
        # ``crc_on`` is ``index >= 2``, ``in_body`` is ``index > 5``, ``n.at_last`` is
        # ``index == last``.
        crc_on, in_body = Signal(name="crc_on"), Signal(name="in_body")
        m.d.comb += o.payload.eq(byte_q)

        # Bytes lost since the last reply left: the next reply says OVERRUN.
        lost = Signal()
        with m.If(self.rx_lost):
            m.d.sync += lost.eq(1)
            with m.If(self.overruns != 0xFFFF):
                m.d.sync += self.overruns.eq(self.overruns + 1)

        m.d.sync += self.activity.eq(0)
        with m.FSM(name="serialiser"):
            with m.State("IDLE"):
                m.d.comb += tokens.r_en.eq(1)
                with m.If(tokens.r_rdy):
                    m.d.sync += [r_kind.eq(tokens.r_data[:2]),
                                 r_status.eq(Mux(lost | self.rx_lost, Status.OVERRUN,
                                                 tokens.r_data[2:4])),
                                 n.r_loaded.eq(tokens.r_data[4]),
                                 index.eq(0), n.out_crc.eq(0), fresh.eq(0),
                                 crc_on.eq(0), in_body.eq(0), n.at_last.eq(0)]
                    with m.If(lost | self.rx_lost):
                        m.d.sync += [lost.eq(0), self.error.eq(1)]
                    with m.If((tokens.r_data[:2] == KIND_IDENTIFY)
                              | (tokens.r_data[:2] == KIND_LOAD)):
                        m.next = "SEND"
                    with m.Else():
                        m.next = "RESULT"
            with m.State("RESULT"):
                m.d.comb += self.acc_out.ready.eq(1)
                with m.If(self.acc_out.valid):
                    m.d.sync += [result.eq(Value.cast(self.acc_out.payload)), fresh.eq(0)]
                    with m.If(r_status == Status.OK):
                        m.d.sync += [self.last_class_valid.eq(1),
                                     self.last_class.eq(
                                         Value.cast(self.acc_out.payload)[:self.class_bits])]
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                    m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += o.valid.eq(fresh)
                with m.If(fresh & o.ready):
                    m.d.sync += [index.eq(index + 1), fresh.eq(0), crc_on.eq(index >= 1),
                                 in_body.eq(index >= 5), n.at_last.eq(index + 1 == last)]
                    with m.If(crc_on):
                        m.d.sync += n.out_crc.eq(crc8_next(n.out_crc, byte_q))
                    with m.If(in_body & (r_kind != KIND_IDENTIFY)):
                        m.d.sync += result.eq(result >> 8)
                    with m.If(n.at_last):
                        m.d.sync += self.activity.eq(1)
                        m.next = "IDLE"

    def _reply_byte(self, m, n):
        """The reply byte at ``n.index`` (combinational), and the index of the last byte."""
        r_kind, index = n.r_kind, n.index
        # Indexed by the reply index itself: the identity starts at byte 6.
        ident_rom = Array(Const(v, 8) for v in bytes(6) + (self.identity or b"\0"))
        ident_len, result_len = len(self.identity) + 1, self.result_bytes + 1
        is_ident = r_kind == KIND_IDENTIFY
        is_load = r_kind == KIND_LOAD
        last = Mux(is_ident, OVERHEAD_BYTES + ident_len - 1,
                   Mux(is_load, OVERHEAD_BYTES, OVERHEAD_BYTES + result_len - 1))
        byte = Signal(8)
        with m.Switch(index):
            with m.Case(0):
                m.d.comb += byte.eq(SYNC[0])
            with m.Case(1):
                m.d.comb += byte.eq(SYNC[1])
            with m.Case(2):
                m.d.comb += byte.eq(Mux(is_ident, Command.IDENTIFY,
                                        Mux(r_kind == KIND_RAW, Command.CLASSIFY_RAW,
                                            Mux(is_load, Command.LOAD_WEIGHTS,
                                                Command.CLASSIFY_BITS))) | REPLY)
            with m.Case(3):
                m.d.comb += byte.eq(Mux(is_ident, ident_len & 0xFF,
                                        Mux(is_load, 1, result_len & 0xFF)))
            with m.Case(4):
                m.d.comb += byte.eq(Mux(is_ident, ident_len >> 8,
                                        Mux(is_load, 0, result_len >> 8)))
            with m.Case(5):
                m.d.comb += byte.eq(n.r_status)
            with m.Default():
                with m.If(n.at_last):
                    m.d.comb += byte.eq(n.out_crc)
                with m.Elif(is_ident):
                    # Bit 2 of the flags byte: weights_loaded when the request was answered.
                    flags = index == 6 + IDENTITY_FLAGS_INDEX
                    m.d.comb += byte.eq(ident_rom[index] | Mux(flags, n.r_loaded << 2, 0))
                with m.Else():
                    m.d.comb += byte.eq(n.result[:8])
        return byte, last
