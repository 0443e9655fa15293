# amaranth: UnusedElaboratable=no
"""UART receiver and transmitter in Amaranth's simulator: bytes, timing contract, errors."""

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator
from bnnhw.boards.uart import UARTRx, UARTTx, uart_divisor


def test_divisor_and_errors():
    assert uart_divisor(12e6, 1_000_000) == 12
    assert uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="baud rate 6000000 is too fast for a 12 MHz clock"):
        uart_divisor(12e6, 6_000_000)
    with pytest.raises(ValueError, match="baud rate 2500000 cannot be made .* 12 MHz"):
        uart_divisor(12e6, 2_500_000)
    with pytest.raises(ValueError, match="divisor must be >= 4, got 3"):
        UARTRx(3)


@pytest.mark.parametrize("divisor", [4, 5, 12])
def test_tx_to_rx_loopback_and_timing(divisor):
    data = [0x00, 0xFF, 0x55, 0xA5, 0x01, 0x80, 0x3C]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sent_at, got, got_at, line_at = [], [], [], {}

    async def bench(ctx):
        # Edge e is the e-th clock edge; a sample taken at edge e shows the cycle before it.
        ctx.set(rx.o_stream.ready, 1)
        ctx.set(tx.i_stream.valid, 1)
        ctx.set(tx.i_stream.payload, data[0])
        edge = 0
        while len(got) < len(data):
            _, _, t_ready, t_valid, r_valid, r_payload, line = await ctx.tick().sample(
                tx.i_stream.ready, tx.i_stream.valid, rx.o_stream.valid,
                rx.o_stream.payload, tx.tx)
            edge += 1
            if t_ready and t_valid:
                sent_at.append(edge)
                if len(sent_at) < len(data):
                    ctx.set(tx.i_stream.payload, data[len(sent_at)])
                else:
                    ctx.set(tx.i_stream.valid, 0)
            if r_valid:
                got.append(r_payload)
                got_at.append(edge)
            line_at[edge] = line
            assert edge < 20 * divisor * (len(data) + 2)

    sim.add_testbench(bench)
    sim.run()
    assert got == data
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert gaps == [tx.cycles_per_byte] * (len(data) - 1)
    # The start bit shows in the sample `latency` edges after the handshake edge, after a
    # high line (idle or the previous stop bit).
    start_bits = [t + tx.latency for t in sent_at]
    assert [(line_at[s - 1], line_at[s]) for s in start_bits] == [(1, 0)] * len(data)
    # The edge that first samples the start bit is the one where it shows in the sample; the
    # byte shows in the sample one edge after it becomes valid.
    assert [g - s for g, s in zip(got_at, start_bits, strict=True)] == \
        [rx.latency + 1] * len(data)


def _drive_rx(divisor, chars, ready=1):
    """Drive ``rx`` with ``(byte, stop_level)`` characters; return bytes and error pulses."""
    dut = UARTRx(divisor)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {"bytes": [], "frame_error": 0, "overrun": 0}

    async def drive(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        for byte, stop in chars:
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [stop]:
                ctx.set(dut.rx, level)
                await ctx.tick().repeat(divisor)
            ctx.set(dut.rx, 1)
            await ctx.tick().repeat(2 * divisor)

    async def watch(ctx):
        ctx.set(dut.o_stream.ready, ready)
        async for _, _, valid, payload, ferr, ovr in ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload, dut.frame_error, dut.overrun):
            if valid and ready:
                seen["bytes"].append(payload)
            seen["frame_error"] += ferr
            seen["overrun"] += ovr

    sim.add_testbench(drive)
    sim.add_process(watch)
    sim.run_until(1e-6 * (5 + 12 * divisor * (len(chars) + 1)))
    return seen, dut


def test_rx_frame_error_dropped_then_recovers():
    seen, _ = _drive_rx(8, [(0x12, 0), (0x34, 1)])
    assert seen["bytes"] == [0x34]
    assert seen["frame_error"] == 1


def test_rx_overrun_keeps_first_byte():
    seen, dut = _drive_rx(8, [(0x12, 1), (0x34, 1)], ready=0)
    assert seen["overrun"] == 1
    assert seen["bytes"] == []
