"""Trainer tests: HF folder end to end, NaN/Inf injection, stop-and-checkpoint, resume, bad input."""

import json

import pytest
import torch

from lm_shared.stability import TrainingStopped
from tormented_mini.cli import main
from tormented_mini.errors import CheckpointError
from tormented_mini.train import CHECKPOINT_NAME, MLMTrainer, TrainConfig

TINY_MODEL = dict(
    hidden_size=32,
    num_heads=2,
    retention_heads=2,
    embedding_size=16,
    num_experts=2,
    mamba_state_size=4,
    ode_steps=1,
)


def tiny(tmp_path, name="run", **overrides):
    base = dict(
        out=str(tmp_path / name),
        size="cpu",
        max_steps=6,
        eval_every=3,
        eval_batches=2,
        batch_size=4,
        seq_len=32,
        vocab_size=400,
        warmup_steps=2,
        threads=1,
        model_overrides=dict(TINY_MODEL),
    )
    base.update(overrides)
    return TrainConfig(**base)


def snapshot(trainer):
    params = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    opt = {
        (i, k): v.clone()
        for i, state in trainer.optimizer.state_dict()["state"].items()
        for k, v in state.items()
        if torch.is_tensor(v)
    }
    return params, opt


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def poison(trainer, value, times=None):
    """Make the gradient of one embedding matrix NaN or Inf on the next `times` backward passes."""
    calls = {"n": 0}
    weight = trainer.model.tormented.embeddings.word_embeddings.weight

    def hook(grad):
        calls["n"] += 1
        if times is None or calls["n"] <= times:
            return torch.full_like(grad, value)
        return grad

    return weight.register_hook(hook)


def test_train_writes_a_hugging_face_folder_ready_for_fill_mask(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    result = trainer.run()
    out = tmp_path / "run"
    assert result.steps == 6 and not result.stopped
    assert result.val_mlm_loss == result.val_mlm_loss  # not NaN
    for name in (
        "config.json",
        "model.safetensors",
        "modeling_tormented.py",
        "tokenizer.json",
        "train_config.json",
        CHECKPOINT_NAME,
    ):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "stability.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {"grad_norm", "has_nan", "has_inf", "repair_action"} <= records[0].keys()
    model = AutoModelForMaskedLM.from_pretrained(out, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.mask_token == "[MASK]" and tokenizer.mask_token_id == trainer.ids.mask
    encoded = tokenizer("El gato duerme.")["input_ids"]
    assert encoded[0] == trainer.ids.cls and encoded[-1] == trainer.ids.sep
    # " [MASK]" swallows its space, so the input has no stray space token before the mask.
    with_mask = tokenizer.convert_ids_to_tokens(tokenizer("El gato [MASK] en la plaza.")["input_ids"])
    assert with_mask[with_mask.index("[MASK]") - 1] != "Ġ"
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=3)
    predictions = fill("El gato [MASK] en la plaza.")
    assert len(predictions) == 3 and all("[MASK]" not in p["sequence"] for p in predictions)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_injected_nonfinite_gradient_skips_the_step_without_touching_state(tmp_path, value):
    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    trainer.train_one_step()
    trainer.train_one_step()  # optimizer state is now populated
    before_params, before_opt = snapshot(trainer)
    seen_at_retry = {}
    original = trainer.batch_loss

    def loss_with_probe(step):
        if "params" not in seen_at_retry and trainer.monitor.records[-1].repair_action == "skip":
            seen_at_retry["params"], seen_at_retry["opt"] = snapshot(trainer)
        return original(step)

    trainer.batch_loss = loss_with_probe
    handle = poison(trainer, value, times=1)
    lr_before = trainer.optimizer.param_groups[0]["lr"]
    record = trainer.train_one_step()
    handle.remove()
    skipped = trainer.monitor.records[-2]
    assert skipped.repair_action == "skip" and (skipped.has_nan or skipped.has_inf)
    # State right after the skipped attempt is bit-identical to the state before it.
    assert_same(seen_at_retry["params"], before_params)
    assert_same(seen_at_retry["opt"], before_opt)
    # The retry ran with a halved LR and did update the model.
    assert record.repair_action == "lr_halved" and record.lr < lr_before
    changed = any(not torch.equal(v, before_params[k]) for k, v in trainer.model.state_dict().items())
    assert changed


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_repeated_failures_save_a_checkpoint_and_stop_cleanly(tmp_path, value):
    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    trainer.train_one_step()
    before_params, before_opt = snapshot(trainer)
    poison(trainer, value)
    with pytest.raises(TrainingStopped):
        trainer.train_one_step()
    assert_same(snapshot(trainer)[0], before_params)
    assert_same(snapshot(trainer)[1], before_opt)
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=False)
    assert saved["step"] == 1
    assert_same({k: v for k, v in saved["model"].items()}, before_params)
    actions = [r.repair_action for r in trainer.monitor.records]
    assert actions[-1] == "stop" and actions.count("skip") + actions.count("lr_halved") >= 3


def test_run_reports_a_clean_stop(tmp_path):
    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    poison(trainer, float("nan"))
    result = trainer.run()
    assert result.stopped and "non-finite" in result.stop_reason
    assert (tmp_path / "run" / CHECKPOINT_NAME).is_file() and (tmp_path / "run" / "config.json").is_file()


def test_resume_is_exact_with_the_same_schedule(tmp_path):
    straight = MLMTrainer(tiny(tmp_path, "a"), progress=False)
    for _ in range(4):
        straight.train_one_step()
    partial = MLMTrainer(tiny(tmp_path, "b"), progress=False)
    for _ in range(2):
        partial.train_one_step()
    partial.save_checkpoint()
    resumed = MLMTrainer(tiny(tmp_path, "b"), resume=True, progress=False)
    for _ in range(2):
        resumed.train_one_step()
    assert_same(snapshot(resumed)[0], snapshot(straight)[0])


def test_resume_refuses_a_checkpoint_of_the_other_model(tmp_path):
    trainer = MLMTrainer(tiny(tmp_path), progress=False)
    trainer.save_checkpoint()
    with pytest.raises(CheckpointError, match="'mini' but --model is 'frankenstein'"):
        MLMTrainer(tiny(tmp_path, model="frankenstein"), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="already holds a run"):
        MLMTrainer(tiny(tmp_path), progress=False)


@pytest.mark.parametrize(
    "setup,needle",
    [
        (lambda d: ["--data", str(d / "missing.txt")], "no such file"),
        (lambda d: (d / "empty.txt").write_text("\n\n  \n") and ["--data", str(d / "empty.txt")], "empty"),
        (
            lambda d: (
                (d / "m.json").write_text('{"layer_pattern": ["retnet", "lstm"]}')
                and ["--model-config", str(d / "m.json")]
            ),
            "layer_pattern[1]",
        ),
        (
            lambda d: (
                (d / "m.json").write_text('{"norm_type": "rmsnorm"}')
                and ["--model-config", str(d / "m.json")]
            ),
            "norm_type",
        ),
        (
            lambda d: (
                (d / "m.json").write_text('{"hidden_size": 130}') and ["--model-config", str(d / "m.json")]
            ),
            "not divisible",
        ),
        (
            lambda d: (d / "m.json").write_text("{bad json") and ["--model-config", str(d / "m.json")],
            "line 1",
        ),
    ],
)
def test_bad_input_fails_before_training(tmp_path, capsys, setup, needle):
    args = setup(tmp_path)
    code = main(["train", "--out", str(tmp_path / "never"), "--max-steps", "1", "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "never" / CHECKPOINT_NAME).exists()
