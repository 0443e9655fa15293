"""The seed-000 table (``bnnhw.train.seed000``)."""

import json

import pytest


def test_seed000_rejects_bad_epochs(tmp_path):
    from bnnhw.train import seed000

    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        seed000.run(epochs=0, out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.needs_data
@pytest.mark.slow
def test_seed000_table_one_epoch(tmp_path):

    from bnnhw.train import seed000

    report = seed000.run(epochs=1, out_dir=tmp_path, repeats=1, progress=False,
                         datasets_=("mnist",), calibrate=2000)
    assert [r["model"] for r in report["rows"]] == [label for label, _, _ in seed000.ROWS]
    assert json.loads((tmp_path / "seed000.json").read_text())["rows"] == report["rows"]
    text = (tmp_path / "seed000.md").read_text()
    assert "| mnist | W1A1, threshold 127.5 |" in text and "80.82" in text
    w1a1 = report["rows"][0]
    assert w1a1["weight_bits"] == 784 * 512 + 512 * 10
    assert w1a1["footprint_kib"] == (784 * 512 + 512 * 10) / 8 / 1024 + 512 * 2 / 1024
    assert w1a1["packed_ms_per_image"] > 0 and w1a1["accuracy"] > 85
    assert report["calibrate"] == 2000 and "--calibrate 2000" in report["command"]
    assert all("accuracy_before_calibration" in r for r in report["rows"])
    assert "calibrated on 2000 training images" in text
