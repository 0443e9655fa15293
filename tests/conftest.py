"""Shared test set-up: the ``needs_data`` marker.

Tests marked ``@pytest.mark.needs_data`` read the MNIST / Fashion-MNIST files from the folder
in ``BNNHW_DATA`` and are skipped when it is not set (the machine may be offline). With it
set, a loader error fails the test like any other.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("BNNHW_DATA"):
        return
    skip = pytest.mark.skip(reason="BNNHW_DATA is not set (folder of the MNIST IDX files)")
    for item in items:
        if "needs_data" in item.keywords:
            item.add_marker(skip)
