"""The tools on top of the library: the ``bnnhw`` command line, the demo, the benchmark and
report writers, and the estimator's calibration. Nothing in the library imports them."""
