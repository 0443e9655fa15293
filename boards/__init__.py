"""Board tops, the UART host link, bitstream builds and the host client.

* :mod:`.uart`: 8N1 receiver and transmitter (stream components).
* :mod:`.protocol`: the frame format shared by host, benches and gateware
  (``docs/host-link.md``).
* :mod:`.link`: the gateware protocol engine between the UART and the accelerator.
* :mod:`.platforms` / :mod:`.top`: the amaranth-boards platform of each board of
  :data:`bnnhw.devices.BOARDS`, and the board tops.
* :mod:`.spram`: weights in the UP5K's SPRAM, loaded at run time with LOAD_WEIGHTS.
* :mod:`.build`: :func:`~.build.build`, a YoWASP build with a resource/fmax report.
* :mod:`.simulate`: :func:`~.simulate.simulate_board`, the UART-level cocotb bench.
* :mod:`.client`: :func:`~.client.run`, the host client over a serial port.

Submodules are imported on use, so importing this package stays cheap.
"""
