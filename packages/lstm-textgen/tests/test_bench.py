import json
from pathlib import Path

from lstm_textgen.cli import main

BENCH_KEYS = {
    "data_batches_per_s",
    "model_steps_per_s",
    "input_headroom",
    "train_tokens_per_s",
    "fed_train_tokens_per_s",
    "sampling_tokens_per_s",
    "precision",
    "device",
}


def test_bench_writes_every_measure(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--out", str(out), "--steps", "1", "--new-tokens", "4", "--no-bf16"]
    assert main([*argv, "--seq-len", "16", "--batch-size", "4", "--jit-compile", "off", "--rounds", "1"]) == 0
    result = json.loads(out.read_text())
    assert BENCH_KEYS <= set(result)
    for key in ("train_tokens_per_s", "fed_train_tokens_per_s", "sampling_tokens_per_s"):
        assert set(result[key]) == {"lstm", "transformer"}
        assert all(v > 0 for v in result[key].values())
    assert result["input_headroom"] > 0 and result["precision"] == "float32"
    assert "input headroom" in capsys.readouterr().err
