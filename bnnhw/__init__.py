"""bnnhw: binarized neural networks to streaming FPGA accelerators with open tools."""

__version__ = "0.1.0"
