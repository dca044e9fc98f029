import json
import math
from pathlib import Path

import pytest
import torch

from infinito_iit.data import load_corpus, prepare_data
from infinito_iit.errors import InfinitoError
from infinito_iit.model import InfinitoConfig
from infinito_iit.train import TrainConfig, evaluate, load_checkpoint, train
from lm_shared.errors import UserError

MODEL = InfinitoConfig(
    vocab_size=300,
    max_seq_len=32,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    memory_slots=8,
    segment_len=4,
    complexity_window=4,
)
TRAIN = TrainConfig(
    vocab_size=300, seq_len=32, batch_size=4, max_steps=4, eval_every=2, proxy_k=3, proxy_sequences=8
)


@pytest.fixture(scope="module")
def data():
    return prepare_data(load_corpus(None), 32, vocab_size=300)


def quiet(msg):
    pass


def test_train_writes_run_and_reports_all_units(tmp_path, data):
    result = train(MODEL, TRAIN, tmp_path / "run", data=data, log=quiet, progress=False)
    run = tmp_path / "run"
    for name in (
        "config.json",
        "run.json",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "model.safetensors",
        "history.json",
        "metrics.json",
        "metrics.jsonl",
        "tokenizer.json",
        "grad_health.jsonl",
    ):
        assert (run / name).is_file(), name
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert any((run / "tensorboard").iterdir())
    final = result.final
    for key in ("loss", "perplexity", "bits_per_byte", "word_perplexity", "phi_proxy", "phi_weights"):
        assert key in final
    assert final["perplexity"] == pytest.approx(math.exp(final["loss"]))
    assert len(result.history["eval"]) == 2 and result.history["train"][-1]["step"] == 4
    assert (
        "phi_weight/temporal" in result.history["train"][0]
        and result.history["train"][-1]["memory_writes"] > 0
    )


def test_evaluate_is_total_nll_over_total_tokens(data):
    torch.manual_seed(0)
    from infinito_iit.model import InfinitoLM

    model = InfinitoLM(MODEL).eval()
    v = data.valid
    metrics = evaluate(
        model, v.inputs, v.labels, data.tokenizer.byte_lengths(), v.n_words, v.n_bytes, batch_size=3
    )
    with torch.no_grad():
        logits = model(v.inputs).logits
    nll = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), v.labels.flatten(), ignore_index=-100, reduction="sum"
    )
    n = int((v.labels >= 0).sum())
    assert metrics["loss"] == pytest.approx(float(nll) / n, rel=1e-5)
    assert metrics["bits_per_byte"] == pytest.approx(float(nll) / (v.n_bytes * math.log(2)), rel=1e-5)
    assert metrics["word_perplexity"] == pytest.approx(math.exp(float(nll) / v.n_words), rel=1e-5)


def test_rerun_into_a_finished_run_is_refused_and_overwrites_nothing(tmp_path, data):
    run = tmp_path / "run"
    train(MODEL, TRAIN, run, data=data, log=quiet, progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    from dataclasses import replace

    with pytest.raises(InfinitoError, match="hidden_size: checkpoint has 32, requested 64"):
        train(replace(MODEL, hidden_size=64), TRAIN, run, resume=True, log=quiet, progress=False)
    with pytest.raises(UserError, match="holds a finished run"):
        train(MODEL, TRAIN, run, data=data, log=quiet, progress=False)
    with pytest.raises(UserError, match="already finished"):
        train(MODEL, TRAIN, run, resume=True, log=quiet, progress=False)
    with pytest.raises(InfinitoError, match="does not match"):
        load_checkpoint(run / "checkpoints" / "best.ckpt", replace(MODEL, num_layers=2))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    forced = train(MODEL, replace(TRAIN, max_steps=2), run, data=data, force=True, log=quiet, progress=False)
    assert forced.history["train"][-1]["step"] == 2


def test_a_second_training_into_a_locked_folder_is_refused(tmp_path, data):
    from lm_shared.runs import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run), pytest.raises(UserError, match="pid"):
        train(MODEL, TRAIN, run, data=data, log=quiet, progress=False)


def test_bad_hyperparameters_are_refused_before_any_work():
    for field, value in (
        ("lr", float("nan")),
        ("max_steps", -5),
        ("batch_size", 0),
        ("vocab_size", 10),
        ("devices", "zero"),
        ("strategy", "horovod"),
    ):
        with pytest.raises(InfinitoError, match=field):
            TrainConfig(**{**TRAIN.__dict__, field: value})


def test_seq_len_above_model_maximum_is_rejected(tmp_path, data):
    with pytest.raises(InfinitoError, match="above the model's max_seq_len 32"):
        train(MODEL, TrainConfig(**{**TRAIN.__dict__, "seq_len": 64}), tmp_path / "r", data=data, log=quiet)
    assert not (tmp_path / "r").exists()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InfinitoError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(InfinitoError, match="not found"):
        load_checkpoint(Path(tmp_path / "nope.pt"))


def test_train_config_validation():
    with pytest.raises(InfinitoError, match="precision"):
        TrainConfig(precision="fp8")


def test_bf16_autocast_and_grad_accumulation_run(tmp_path, data):
    cfg = TrainConfig(
        **{**TRAIN.__dict__, "precision": "bf16-mixed", "grad_accum": 2, "max_steps": 2, "proxy_k": 0}
    )
    result = train(MODEL, cfg, tmp_path / "bf16", data=data, log=quiet, progress=False)
    assert math.isfinite(result.final["loss"]) and result.history["train"][-1]["step"] == 2


def test_early_stopping_when_validation_stops_improving(tmp_path, data):
    cfg = TrainConfig(
        **{**TRAIN.__dict__, "lr": 1e-9, "max_steps": 8, "eval_every": 1, "patience": 1, "proxy_k": 0}
    )
    result = train(MODEL, cfg, tmp_path / "es", data=data, log=quiet, progress=False)
    assert result.stopped_early.startswith("early stopping") and result.history["train"][-1]["step"] < 8
