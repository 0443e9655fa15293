"""8N1 UART receiver and transmitter as stream components.

One bit lasts ``divisor`` clock cycles, ``divisor = round(clk_freq / baud)``
(:func:`uart_divisor`). A character is a start bit (0), eight data bits least significant
first, and a stop bit (1): ``10 * divisor`` cycles.

Timing contract (measured by ``tests/test_boards_uart.py``):

* :class:`UARTRx`: ``o_stream.valid`` rises ``latency = 2 + divisor // 2 + 9 * divisor``
  cycles after the clock edge that first samples the start bit's falling edge on ``rx``
  (two synchroniser flops, half a bit to the middle of the start bit, then nine bit times
  to the middle of the stop bit).
* :class:`UARTTx`: the start bit appears on ``tx`` ``latency = 1`` cycle after the clock edge
  that completes the ``i_stream`` handshake; ``i_stream.ready`` rises again after
  ``cycles_per_byte = 10 * divisor`` cycles, so back-to-back bytes leave without gaps.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

MAX_BAUD_ERROR = 0.02


def uart_divisor(clk_freq: float, baud: int) -> int:
    """Clock cycles per bit, ``round(clk_freq / baud)``.

    Raises
    ------
    ValueError
        If the divisor is below 4 (too few samples per bit) or the resulting baud rate is off
        by more than 2 % (``|clk_freq / divisor - baud| / baud > 0.02``).
    """
    if baud <= 0 or clk_freq <= 0:
        raise ValueError(f"baud rate and clock must be positive (baud={baud}, clk={clk_freq})")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(
            f"baud rate {baud} is too fast for a {clk_freq / 1e6:g} MHz clock "
            f"(divisor {clk_freq / baud:.2f}, need >= 4)"
        )
    error = abs(clk_freq / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(
            f"baud rate {baud} cannot be made from a {clk_freq / 1e6:g} MHz clock "
            f"(divisor {divisor} gives {100 * error:.1f} % error, limit 2 %)"
        )
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    The line passes two synchroniser flops. A falling edge starts a character; the start bit
    is checked again half a bit later (a shorter glitch is ignored), then each data bit and
    the stop bit are sampled in the middle of their bit time. A character whose stop bit
    reads 0 is dropped and raises ``frame_error`` for one cycle; the receiver then waits for
    the line to return high.

    A UART cannot be stalled: if ``o_stream`` still holds an unaccepted byte when the next
    one completes, the new byte is dropped and ``overrun`` pulses for one cycle.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    latency : int
        Cycles from the first clock edge that sees ``rx`` low to ``o_stream.valid``:
        ``2 + divisor // 2 + 9 * divisor``.
    cycles_per_byte : int
        ``10 * divisor``.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be >= 4, got {divisor}")
        self.divisor = divisor
        self.latency = 2 + divisor // 2 + 9 * divisor
        self.cycles_per_byte = 10 * divisor
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(8))
        shift = Signal(8)

        with m.If(self.o_stream.ready):
            m.d.sync += self.o_stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    m.d.sync += bit.eq(0)
                    m.next = "CHECK_START"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("CHECK_START"):
                # ``line`` is sampled here, in the middle of the start bit.
                with m.If(line):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += timer.eq(self.divisor - 2)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq((shift >> 1) | (line << 7)), bit.eq(bit + 1)]
                    m.d.sync += timer.eq(self.divisor - 1)
                    with m.If(bit == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.o_stream.valid & ~self.o_stream.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.o_stream.payload.eq(shift),
                                         self.o_stream.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter; ``tx`` idles high.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    latency : int
        1: the start bit is on ``tx`` the cycle after the handshake.
    cycles_per_byte : int
        ``10 * divisor``; ``i_stream.ready`` is high again exactly that many cycles after the
        handshake.
    """

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        if divisor < 4:
            raise ValueError(f"UART divisor must be >= 4, got {divisor}")
        self.divisor = divisor
        self.latency = 1
        self.cycles_per_byte = 10 * divisor
        super().__init__()

    def elaborate(self, platform) -> Module:
        m = Module()
        timer = Signal(range(self.divisor))
        bits_left = Signal(range(11))
        # Start bit, eight data bits, stop bit; shifted out least significant first.
        frame = Signal(10, init=0x3FF)

        m.d.comb += self.tx.eq(frame[0])
        # Ready during the last cycle of the stop bit too, so characters follow without gaps.
        m.d.comb += self.i_stream.ready.eq(
            (bits_left == 0) | ((bits_left == 1) & (timer == 0)))
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [
                frame.eq(self.i_stream.payload << 1 | (1 << 9)),
                bits_left.eq(10),
                timer.eq(self.divisor - 1),
            ]
        with m.Elif(bits_left != 0):
            with m.If(timer == 0):
                m.d.sync += [
                    frame.eq(frame >> 1 | (1 << 9)),
                    bits_left.eq(bits_left - 1),
                    timer.eq(self.divisor - 1),
                ]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


__all__ = ["UARTRx", "UARTTx", "uart_divisor"]
