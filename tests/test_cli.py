"""The ``bnnhw`` command: JSON output and clear errors."""

import json

import numpy as np
import pytest

from bnnhw.model import DenseLayer, InputQuantizer, Model
from bnnhw.tools.cli import main


@pytest.fixture
def model_file(tmp_path):
    rng = np.random.default_rng(0)
    model = Model(InputQuantizer.fixed(127.5),
                  (DenseLayer(rng.integers(0, 2, (32, 784)), rng.integers(380, 405, 32)),
                   DenseLayer(rng.integers(0, 2, (10, 32)))))
    return model.save(tmp_path / "model.npz")


@pytest.mark.needs_data
def test_eval_prints_one_json_object(model_file, capsys):
    assert main(["eval", str(model_file), "--dataset", "mnist", "--limit", "500",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 500
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["seconds"] >= 0
    assert np.array(result["confusion"]).sum() == 500


def test_malformed_model_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["eval", str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnnhw: error: ") and str(bad) in err


def test_unknown_dataset_is_rejected(model_file, capsys):
    with pytest.raises(SystemExit):
        main(["eval", str(model_file), "--dataset", "cifar10"])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err


def test_build_rejects_unknown_board_before_synthesis(model_file, tmp_path, capsys):
    out = tmp_path / "build"
    assert main(["build", str(model_file), "--board", "de10-nano", "--out", str(out)]) == 2
    assert "unknown board 'de10-nano'" in capsys.readouterr().err
    assert not out.exists()


def test_generate_rejects_impossible_folding_and_writes_nothing(model_file, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", str(model_file), "--out", str(out), "--fold", "5x16,10x8"]) == 2
    assert "PE must divide MH (MH=32, PE=5)" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_run_on_missing_port_is_a_clear_error(tmp_path, capsys):
    port = tmp_path / "ttyUSB9"
    assert main(["run", "--port", str(port), "--limit", "1"]) == 2
    assert str(port) in capsys.readouterr().err


@pytest.mark.cocotb
@pytest.mark.needs_data
def test_demo_json_is_the_only_thing_on_stdout(tmp_path, capfd):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--arch", "tfc", "--epochs", "1", "--sim-images",
                 "4", "--board", "none", "--json"]) == 0
    captured = capfd.readouterr()
    result = json.loads(captured.out)
    assert "epoch 1/1" in captured.err
    assert result["build"] is None
    assert result["sim"]["images"] == 4 and result["sim"]["mismatches"] == 0
    assert result["eval"]["images"] == 10000
    assert (out / "report.html").stat().st_size > 0
    table = result["table"]
    assert "1 epoch," in table and "1 epochs" not in table
    assert f"folding {result['generate']['folding'][0]['pe']}x" in table
    assert f"(folding {result['sim']['fold']})" in table and str(out / "verilog") in table


def test_every_option_has_help_and_version_is_printed(capsys):
    from bnnhw.tools.cli import _parser

    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices
    missing = [f"{name} {action.dest}" for name, sub in commands.items()
               for action in sub._actions if not action.help]
    assert missing == []
    assert "``" not in parser.format_help()
    assert "(default: mnist)" in commands["eval"].format_help()
    assert "(default: None)" not in commands["train"].format_help()
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("bnnhw 0.")
