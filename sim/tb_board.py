"""cocotb bench of the board top's core (:class:`bnnhw.boards.top.LinkTop`) over its UART pins.

Only imported inside a simulator (the ``tb_`` prefix keeps pytest away). The job is the JSON
file named by ``BNNHW_BOARD_JOB``::

    {"divisor": 4, "chunks": ["b54e02...", ...], "gap_bits": 3, "replies": 21,
     "max_cycles": 2000000, "result": "/path/result.json"}

Each chunk (hex bytes, made by :mod:`bnnhw.boards.protocol` on the host side, garbage
included) is sent as 8N1 characters of ``divisor`` clock cycles per bit on ``rx``, with
``gap_bits`` idle bit times between chunks. A receiver samples ``tx`` in the middle of each
bit, checks every stop bit, and feeds the bytes to :class:`~bnnhw.boards.protocol.FrameDecoder`
until ``replies`` frames have arrived. The result JSON lists the reply frames (command, payload
hex), the number of framing errors seen on ``tx``, the cycles used and the LED word at the
end. The caller compares the replies with the reference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cocotb
from bnnhw.boards.protocol import FrameDecoder
from cocotb.clock import Clock
from cocotb.handle import HierarchyObject
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

JOB_ENV = "BNNHW_BOARD_JOB"


async def _send(dut: Any, chunks: list[bytes], divisor: int, gap_bits: int) -> None:
    for chunk in chunks:
        for byte in chunk:
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                dut.rx.value = level
                await ClockCycles(dut.clk, divisor)
        await ClockCycles(dut.clk, gap_bits * divisor)


async def _receive(dut: Any, divisor: int, decoder: FrameDecoder, frames: list,
                   state: dict[str, int]) -> None:
    while True:
        await FallingEdge(dut.tx)
        await ClockCycles(dut.clk, divisor // 2)
        await ReadOnly()
        if int(dut.tx.value) != 0:
            state["glitches"] += 1
            continue
        byte = 0
        for i in range(8):
            await ClockCycles(dut.clk, divisor)
            await ReadOnly()
            byte |= int(dut.tx.value) << i
        await ClockCycles(dut.clk, divisor)
        await ReadOnly()
        if int(dut.tx.value) != 1:
            state["framing_errors"] += 1
        state["bytes"] += 1
        frames.extend(decoder.feed(bytes((byte,))))


def _kick_combinational(handle: Any) -> int:
    """Toggle every ``dump_module`` register that yosys' Verilog writer adds to each module.

    yosys makes each ``always @*`` block read that register so that Icarus evaluates the block
    at time 0; Icarus 11 may apply its initialiser before the blocks wait, and a block whose
    inputs are constant until the first event (for example an output that depends only on an
    FSM state register sitting at its reset value) then stays X. Writing the register once
    wakes every such block. Returns the number of registers written.
    """
    count = 0
    for child in handle:
        name = child._name
        if "dump_module" in name:
            child.value = 1
            count += 1
        elif isinstance(child, HierarchyObject):
            count += _kick_combinational(child)
    return count


async def run_job(dut: Any) -> None:
    """Send the job's frames on ``rx``, collect the replies from ``tx``, write the result."""
    job = json.loads(Path(os.environ[JOB_ENV]).read_text())
    kicked = _kick_combinational(dut)
    divisor = int(job["divisor"])
    chunks = [bytes.fromhex(c) for c in job["chunks"]]
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)

    decoder = FrameDecoder()
    frames: list = []
    state = {"glitches": 0, "framing_errors": 0, "bytes": 0}
    cocotb.start_soon(_receive(dut, divisor, decoder, frames, state))
    cocotb.start_soon(_send(dut, chunks, divisor, int(job["gap_bits"])))
    cycles = 0
    step = 10 * divisor
    while len(frames) < job["replies"] and cycles < job["max_cycles"]:
        await ClockCycles(dut.clk, step)
        cycles += step
    await ReadOnly()
    result = {
        "frames": [{"command": f.command, "payload": f.payload.hex()} for f in frames],
        "discarded": decoder.discarded, "cycles": cycles, "leds": int(dut.leds.value),
        "kicked": kicked,
        **state,
    }
    tmp = Path(job["result"]).with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(job["result"])


@cocotb.test()
async def board_replies_over_uart(dut: Any) -> None:
    """The bench: :func:`run_job` on the job named by ``BNNHW_BOARD_JOB``."""
    await run_job(dut)
