"""cocotb benches of the exported accelerator and the Python API behind ``bnnhw sim``.

:func:`run_sim` simulates the Verilog generated from a model on test images and compares every
output word with the integer reference; :func:`simulate` runs the same bench on any
``bnnhw_top`` Verilog against given expectations. The bench itself is ``tb_accel`` (only
imported inside a simulator).
"""

from .runner import SIMULATORS, check_simulator, run_sim, simulate

__all__ = ["SIMULATORS", "check_simulator", "run_sim", "simulate"]
