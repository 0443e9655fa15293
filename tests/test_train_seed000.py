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
    assert [r["model"] for r in report["rows"]] == ([label for label, *_ in seed000.ROWS]
                                                   + [seed000.CHOSEN_LABEL])
    chosen = report["rows"][-1]
    scores = chosen["validation_accuracy"]
    assert list(scores) == [str(t) for t in seed000.THRESHOLD_CANDIDATES]
    assert scores[str(chosen["input_threshold"])] == max(scores.values())
    assert chosen["weight_bits"] == 784 * 512 + 512 * 10
    pixels = report["rows"][len(seed000.ROWS) - 1]
    assert pixels["model"] == "W1A1, 8-bit input" and pixels["input_kind"] == "pixels8"
    # Sums of 784 pixels up to 255 need int32 thresholds in the first layer.
    assert pixels["footprint_kib"] == (784 * 512 + 512 * 10) / 8 / 1024 + 512 * 4 / 1024
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
    assert f"* mnist: chosen {chosen['input_threshold']:g}; " in text


@pytest.mark.needs_data
def test_choose_threshold_uses_held_out_training_images():
    from bnnhw.train import seed000

    chosen, scores = seed000.choose_threshold("mnist", 1, 0, None, False, threads=1,
                                              candidates=(64.0, 250.0))
    assert list(scores) == ["64.0", "250.0"]
    # A threshold of 250 keeps only the brightest strokes: clearly worse on held-out digits.
    assert chosen == 64.0 and scores["64.0"] > scores["250.0"] + 1
    assert all(0 <= a <= 100 for a in scores.values())
