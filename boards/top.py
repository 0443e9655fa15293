"""Board tops: UART + host link + accelerator, and the pins of each board.

:class:`LinkTop` is the platform-free core with plain ports (``rx``, ``tx``, LED roles); its
Verilog is what the cocotb bench drives. :class:`BoardTop` puts it on a board: pin buffers
for the UART and the LEDs listed in :attr:`bnnhw.devices.Board.leds`.

Data path::

    rx pin -> UARTRx -> byte FIFO (16) -> byte register -> Link -> Accelerator -> Link
           -> UARTTx -> tx pin

The byte FIFO absorbs short stalls of the accelerator's input (up to 16 byte times) so that
a UART byte is not lost while a frame is being accepted. The byte register between the FIFO
and the link takes a byte only while empty (at most one byte per two cycles, far above any
UART rate), so neither the FIFO's memory output nor the link's ``ready`` reaches the other
side within a cycle: on the iCE40 that path (FIFO read port -> link parser -> reply token
queue) was the critical path of the iCEBreaker sfc build.
"""

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from bnnhw.devices import get_board, plan_spram
from bnnhw.gateware.dataflow import Accelerator
from bnnhw.model import PixelInput

from .link import Link
from .pll import ClockGenerator
from .protocol import Identity
from .spram import SpramAccelerator, WeightBus
from .uart import UARTRx, UARTTx, uart_divisor

__all__ = ["BoardTop", "LinkTop", "bits_pixel_values", "make_identity"]

RX_FIFO_DEPTH = 16
ACC_QUEUE_DEPTH = 3
"""Words between the link and the accelerator: the least depth at which
:class:`~amaranth.lib.fifo.SyncFIFOBuffered` passes one word per cycle."""
PRESCALE_BITS = 12
LED_ROLES = ("class0", "class1", "class2", "class3", "valid", "activity", "error")


def bits_pixel_values(model):
    """``(0, t_0, ..., t_{L-1})`` clamped to 255 for CLASSIFY_BITS, or ``None`` if the
    quantizer's levels do not pack into whole bytes (``L`` in 1, 2, 4, 8 and ``8 | N L``) or
    the first layer reads the 8-bit pixels themselves (input kind ``pixels8``: only
    CLASSIFY_RAW carries them)."""
    q = model.quantizer
    if isinstance(q, PixelInput) or q.levels not in (1, 2, 4, 8) or (q.pixels * q.levels) % 8:
        return None
    return (0, *(min(int(t), 255) for t in q.thresholds))


def make_identity(model, accelerator, clk_hz, baud, spram_layers=()):
    """The IDENTIFY record of ``accelerator`` built from ``model`` (weights not yet loaded)."""
    q = model.quantizer
    return Identity(
        model_sha256_prefix=model.sha256()[:16], pixels=q.pixels, levels=q.levels,
        classes=accelerator.classes, class_bits=accelerator.class_bits,
        score_bits=accelerator.score_bits, pixels_per_word=accelerator.pixels_per_word,
        cycles_per_frame=accelerator.cycles_per_frame, clk_hz=int(clk_hz), baud=int(baud),
        bits_supported=bits_pixel_values(model) is not None,
        folding=accelerator.folding.spec, weights_in_ram=bool(spram_layers),
        spram_layers=tuple(spram_layers))


class LinkTop(wiring.Component):
    """UART, host link and accelerator with plain ports.

    Parameters
    ----------
    model : bnnhw.model.Model
    folding : bnnhw.folding.Folding
    clk_hz : int
        Clock frequency (sets the UART divisor, the LED blink and the frame timeout).
    baud : int
        Host link rate (``uart_divisor`` checks it).
    timeout_cycles : int or None
        Idle cycles that abandon a frame (default 10 ms, at least 40 byte times).
    spram_layers : tuple of int
        Layers whose weights live in the UP5K's SPRAM (:mod:`bnnhw.boards.spram`), loaded
        with LOAD_WEIGHTS; empty: all weights in block RAM ROMs and no LOAD_WEIGHTS.

    Attributes
    ----------
    accelerator, link, divisor, identity
    spram_plan : tuple of SpramLayer
        Where the SPRAM layers sit (:func:`bnnhw.devices.plan_spram`).
    latency, cycles_per_frame : int
        Of the accelerator (the link adds the UART time, see ``link_cycles_per_frame``, and
        its words pass a 2-cycle queue, ``ACC_QUEUE_DEPTH`` words, before the accelerator).
    link_cycles_per_frame : int
        ``request_bytes_raw * 10 * divisor``: cycles the UART needs per CLASSIFY_RAW frame.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    leds: Out(len(LED_ROLES))

    def __init__(self, model, folding, clk_hz, baud, timeout_cycles=None, spram_layers=()):
        self.divisor = uart_divisor(clk_hz, baud)
        self.clk_hz = int(clk_hz)
        self.baud = int(baud)
        folding.check(model)
        self.spram_plan = plan_spram(model, folding, spram_layers)
        self.weight_bus = WeightBus()
        if self.spram_plan:
            self.accelerator = SpramAccelerator(model, folding, self.spram_plan, self.weight_bus)
        else:
            self.accelerator = Accelerator(model, folding)
        self.identity = make_identity(model, self.accelerator, clk_hz, baud,
                                      tuple(p.index for p in self.spram_plan))
        if timeout_cycles is None:
            timeout_cycles = max(int(clk_hz) // 100, 400 * self.divisor)
        self.link = Link(pixels=model.quantizer.pixels,
                         pixels_per_word=self.accelerator.pixels_per_word,
                         out_width=self.accelerator.out_width,
                         class_bits=self.accelerator.class_bits,
                         out_layout=self.accelerator.out_layout,
                         identity=self.identity.encode(),
                         bits_pixel_values=bits_pixel_values(model),
                         timeout_cycles=timeout_cycles,
                         load_weights=bool(self.spram_plan))
        self.latency = self.accelerator.latency
        self.cycles_per_frame = self.accelerator.cycles_per_frame
        self.link_cycles_per_frame = self.link.request_bytes_raw * 10 * self.divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = UARTRx(self.divisor)
        m.submodules.uart_tx = tx = UARTTx(self.divisor)
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        m.submodules.link = link = self.link
        m.submodules.accelerator = acc = self.accelerator

        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        m.d.comb += [fifo.w_data.eq(rx.o_stream.payload), fifo.w_en.eq(rx.o_stream.valid),
                     rx.o_stream.ready.eq(fifo.w_rdy)]
        rx_byte, rx_full = Signal(8), Signal()
        m.d.comb += [fifo.r_en.eq(~rx_full),
                     link.i_bytes.payload.eq(rx_byte), link.i_bytes.valid.eq(rx_full)]
        with m.If(~rx_full & fifo.r_rdy):
            m.d.sync += [rx_byte.eq(fifo.r_data), rx_full.eq(1)]
        with m.Elif(rx_full & link.i_bytes.ready):
            m.d.sync += rx_full.eq(0)
        wiring.connect(m, link.o_bytes, tx.i_stream)
        # The link's words reach the accelerator through a 3-word queue (2 cycles), so the
        # accelerator's ready, a chain through its first stages, ends at the queue's level
        # flip-flops instead of running on into the link's parser and the UART FIFO.
        m.submodules.acc_queue = queue = SyncFIFOBuffered(
            width=len(link.acc_in.payload), depth=ACC_QUEUE_DEPTH)
        m.d.comb += [queue.w_data.eq(link.acc_in.payload), queue.w_en.eq(link.acc_in.valid),
                     link.acc_in.ready.eq(queue.w_rdy),
                     acc.i_stream.payload.eq(queue.r_data), acc.i_stream.valid.eq(queue.r_rdy),
                     queue.r_en.eq(acc.i_stream.ready)]
        wiring.connect(m, acc.o_stream, link.acc_out)
        bus = self.weight_bus
        m.d.comb += [bus.addr.eq(link.w_addr), bus.data.eq(link.w_data), bus.en.eq(link.w_en)]

        # The receiver drops a byte when the FIFO is still full as the next one completes:
        # the link counts it and reports it to the host (status OVERRUN).
        m.d.comb += link.rx_lost.eq(rx.overrun)
        uart_error = Signal()
        with m.If(rx.frame_error | rx.overrun):
            m.d.sync += uart_error.eq(1)
        # About 50 ms per reply, counted in ticks of 2**PRESCALE_BITS cycles: two short carry
        # chains instead of one ~20-bit decrement, which limited fmax on the UP5K.
        prescale = Signal(PRESCALE_BITS)
        tick = prescale == (1 << PRESCALE_BITS) - 1
        m.d.sync += prescale.eq(prescale + 1)
        blink_ticks = max(1, -(-self.clk_hz // (20 << PRESCALE_BITS)))
        blink = Signal(range(blink_ticks + 1))
        with m.If(link.activity):
            m.d.sync += blink.eq(blink_ticks)
        with m.Elif(tick & (blink != 0)):
            m.d.sync += blink.eq(blink - 1)
        roles = {
            "valid": link.last_class_valid,
            "activity": blink != 0,
            "error": uart_error | link.error,
        }
        for i in range(4):
            roles[f"class{i}"] = link.last_class[i] if i < len(link.last_class) else 0
        for i, role in enumerate(LED_ROLES):
            m.d.comb += self.leds[i].eq(roles[role])
        return m


class BoardTop(Elaboratable):
    """:class:`LinkTop` on a board from :data:`bnnhw.devices.BOARDS`.

    Parameters
    ----------
    model, folding
    board : str
        A key of ``BOARDS`` (``ValueError`` naming the choices otherwise).
    baud : int or None
        Default: the board's ``default_baud``.
    spram_layers : tuple of int
        See :class:`LinkTop`.
    pll : bnnhw.boards.pll.PLLSettings or None
        Clock the design from this PLL setting (:class:`~bnnhw.boards.pll.ClockGenerator`);
        None: the board's oscillator drives ``sync`` directly.

    Attributes
    ----------
    clk_hz : int
        The frequency ``sync`` runs at (the PLL output, or the board clock).
    """

    def __init__(self, model, folding, board, baud=None, spram_layers=(), pll=None):
        self.board = get_board(board)
        self.pll = pll
        self.clk_hz = round(pll.f_out_hz) if pll is not None else self.board.clk_hz
        self.core = LinkTop(model, folding, self.clk_hz, baud or self.board.default_baud,
                            spram_layers=spram_layers)

    def elaborate(self, platform):
        m = Module()
        if self.pll is not None:
            m.domains.sync = ClockDomain("sync")
            m.submodules.clocks = ClockGenerator(self.pll)
        m.submodules.core = core = self.core
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buffer.i), tx_buffer.o.eq(core.tx)]
        requested = {}
        for k, (resource, number, sub, role) in enumerate(self.board.leds):
            if (resource, number) not in requested:
                requested[resource, number] = platform.request(resource, number, dir="-")
            pins = requested[resource, number]
            port = getattr(pins, sub) if sub else pins
            buffer = io.Buffer("o", port)
            m.submodules[f"led{k}_buffer"] = buffer
            m.d.comb += buffer.o.eq(core.leds[LED_ROLES.index(role)])
        return m
