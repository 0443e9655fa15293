"""An 8-bit-first-layer model through the exported Verilog on Icarus (cocotb)."""


import pytest
from bnnhw.sim import run_sim
from bnnhw.train import train


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_trained_pixels8_tfc_on_icarus(tmp_path):
    """tfc with input kind pixels8 (1 epoch on 3,000 images), 40 MNIST test images, stalls."""
    model = train("mnist", "tfc", 1, 0, None, progress=False, limit_train=3000,
                  input_kind="pixels8").model
    assert model.quantizer.kind == "pixels8"
    result = run_sim(model, limit=40, simulator="icarus", fold="balanced:64",
                     build_dir=tmp_path, seed=1, stall=0.2)
    assert result["images"] == result["received"] == 40
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["protocol_violations"] == 0
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"]
    assert result["latency_measured"] == result["latency_declared"]
    assert result["accuracy"] == result["reference_accuracy"]
    assert result["model_sha256"] == model.sha256()
