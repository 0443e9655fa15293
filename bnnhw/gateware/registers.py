"""The accelerator's reset policy: control registers are reset, data registers are not.

The ``sync`` reset returns every *control* register to its initial value: valid flags,
counters, bank-full flags, credit counters. *Data* registers (stream payloads, adder-tree
partial sums, accumulators, window columns, width-converter and argmax holding registers)
are declared ``reset_less``: each is read only when a control register that *is* reset says
it holds a value (a valid flag, a first-beat tag, a count), so its content after a reset
never reaches an output. They still start at their initial value (0) in every simulator and
on the FPGA, so the cycle-by-cycle behaviour from power-up is unchanged.

Why: on a large design the reset is one net to every flip-flop that has one. Measured on the
ECP5 netlist of cbcnn-small (``synth_ecp5``), 19,226 of 20,031 flip-flops hung on the reset
before this policy; routed across an ECP5-85F that net was the critical path of the cbcnn-deep
builds (20 ns of routing). With the policy only the control flip-flops are loads.
"""

from amaranth.hdl import Signal

__all__ = ["payload_register"]


def payload_register(m, port, name):
    """A reset-less register of ``port.payload``'s shape that drives ``port.payload``.

    For stream sources that register their payload: assign the returned register in ``sync``
    wherever the payload would have been assigned. ``port.payload`` follows it combinationally,
    so the timing is that of a registered payload.

    Parameters
    ----------
    m : Module
    port : amaranth.lib.stream.Interface
        The source side of a stream (its ``payload`` is driven here).
    name : str

    Returns
    -------
    Signal or amaranth.lib.data.View
        Of the payload's shape (a view for a structured payload).
    """
    register = Signal(port.payload.shape(), name=name, reset_less=True)
    m.d.comb += port.payload.eq(register)
    return register
