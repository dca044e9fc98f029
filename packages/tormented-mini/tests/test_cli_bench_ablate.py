"""bench and ablate write the issue's JSON keys; the CLI rejects bad input with exit status 2."""

import json

import pytest

from lm_shared.cli_help import options_without_help
from tormented_mini import ablate, bench
from tormented_mini.cli import main


def test_bench_writes_the_contract_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_in_child", lambda fn, *args: fn(*args))  # no subprocess in tests
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--out",
            str(out),
            "--size",
            "cpu",
            "--batch-size",
            "1",
            "--seq-len",
            "8",
            "--steps",
            "1",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("mini_step_s", "frankenstein_step_s", "mini_peak_mb", "frankenstein_peak_mb"):
        assert isinstance(report[key], float) and report[key] >= 0, key
    assert report["mini_step_s"] > 0 and report["frankenstein_step_s"] > 0
    assert set(report["block_fwd_bwd_s"]) == set(bench.BLOCK_NAMES)
    assert report["mini_bf16_autocast_step_s"] > 0
    # Issue 16: profile split, counted FLOPs, matmul peak and MFU per model.
    assert report["matmul_peak_fp32_gflops"] > 0
    for model in ("mini", "frankenstein"):
        assert report[f"{model}_flops_per_step"] > 0
        assert 0 < report[f"{model}_mfu"] < 1
        split = report[f"{model}_profile"]["split_fraction"]
        assert abs(sum(split.values()) - 1) < 0.02 and split["matmul"] > 0


def test_ablate_reports_loss_and_accuracy_per_variant(tmp_path, monkeypatch):
    monkeypatch.setattr(ablate, "VARIANTS", (("derf_no_hope", "derf", False),))
    out = tmp_path / "ablate.json"
    code = main(
        [
            "ablate",
            "--out",
            str(out),
            "--max-steps",
            "2",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--threads",
            "1",
            "--eval-batches",
            "2",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["summary"]) == {"derf_no_hope"}
    for run in report["runs"]:
        assert run["val_mlm_loss"] > 0 and 0 <= run["val_masked_acc"] <= 1
    assert report["summary"]["derf_no_hope"]["use_hope"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--out", "x.txt"],
        ["ablate", "--out", "x.txt"],
        ["fill-mask", "no-such-folder", "la [MASK]"],
        ["train", "--model", "mini", "--seq-len", "4", "--no-progress"],
    ],
)
def test_cli_user_errors_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_info_lists_presets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "Tormented-BERT presets" in out and "derf" in out


def test_train_help_describes_every_option(capsys):
    from tormented_mini.cli import COMMANDS

    for command in COMMANDS.values():
        assert options_without_help(command.parser()) == []
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "HoPE position encoding (default: the preset's)" in out and "(default: 300)" in out


def test_fill_mask_names_another_members_run_folder(tmp_path, capsys):
    # `fill-mask <a nanologic run>` said "not a model folder (no config.json)"; it names the member.
    run = tmp_path / "nl"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"package": "nanologic", "status": "finished"}))
    assert main(["fill-mask", str(run), "la [MASK]"]) == 2
    assert "a nanologic run folder, not a tormented-mini one" in capsys.readouterr().err


def test_fill_mask_names_a_truncated_weights_file(tmp_path, capsys):
    # A truncated model.safetensors ended fill-mask with a safetensors traceback.
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    assert main(["fill-mask", str(run), "la [MASK]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'model.safetensors'}: damaged") and "Traceback" not in err
