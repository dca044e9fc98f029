import torch

from nanologic.model import NanoLogic, build_config
from nanologic.training import Example, LengthBucketSampler, pack_collate, pad_collate, param_groups


def _examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for n, p in [(12, 5), (7, 3), (15, 6), (9, 4)]:
        ids = [1] + torch.randint(10, 200, (n - 1,), generator=g).tolist()
        out.append(Example(ids, p, "simple"))
    return out


def test_pad_collate_masks_prompt_and_padding():
    batch = pad_collate(_examples(), pad_id=0, loss_on="output")
    assert batch["input_ids"].shape == (4, 14)
    ex = _examples()[1]
    labels = batch["labels"][1].tolist()
    assert labels[: ex.n_prompt - 1] == [-100] * (ex.n_prompt - 1)
    assert labels[ex.n_prompt - 1 : len(ex.ids) - 1] == ex.ids[ex.n_prompt :]
    assert set(labels[len(ex.ids) - 1 :]) == {-100}
    assert (pad_collate(_examples(), 0, "all")["labels"] != -100).sum() == sum(
        len(e.ids) - 1 for e in _examples()
    )


def test_packing_gives_the_same_loss_as_padding():
    torch.manual_seed(0)
    model = NanoLogic(build_config("tiny", 200, qk_norm=False)).eval()
    padded = pad_collate(_examples(), 0, "output")
    packed = pack_collate(_examples(), 0, "output", pack_len=32)
    assert packed["input_ids"].shape[0] < 4
    kw = {k: packed[k] for k in ("input_ids", "labels", "position_ids", "attention_mask")}
    loss_packed = model(**kw)["ce_loss"]
    loss_padded = model(padded["input_ids"], labels=padded["labels"])["ce_loss"]
    torch.testing.assert_close(loss_packed, loss_padded, atol=1e-5, rtol=1e-5)


def test_bucket_sampler_curriculum_then_shuffle():
    lengths = list(range(100))
    sampler = LengthBucketSampler(lengths, 10, seed=0, curriculum_epochs=1)
    first = list(sampler)
    assert [i for b in first for i in b] == list(range(100))
    second = list(sampler)
    assert sorted(i for b in second for i in b) == list(range(100))
    assert second != first
    for b in second:
        assert max(lengths[i] for i in b) - min(lengths[i] for i in b) < 100


def test_weight_decay_groups_exclude_embeddings_and_norms():
    model = NanoLogic(build_config("tiny", 200))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("norm" not in names[id(p)] and "embed" not in names[id(p)] for p in decay["params"])
    assert any("embed" in names[id(p)] for p in no_decay["params"])


def test_resume_with_every_phase_done_loads_the_last_weights_and_fits_nothing(tmp_path):
    # A run stopped during its evaluation has every phase done; resuming it used to reach the
    # return of an unbound Trainer (UnboundLocalError) instead of going on to the evaluation.
    from types import SimpleNamespace

    from nanologic.training import FitSettings, TrainConfig, build_module, fit_phases, training_phases

    tc = TrainConfig(cot_epochs=1).for_preset("tiny")
    module = build_module(build_config("tiny", 64), tc)
    trained = {k: v + 1.0 if v.is_floating_point() else v for k, v in module.state_dict().items()}
    phases = [phase.name for phase in training_phases(tc)]
    for name in phases:
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        torch.save({"state_dict": trained}, tmp_path / "checkpoints" / name / "last.ckpt")
    run = SimpleNamespace(path=tmp_path, resumed=True, state={"phases_done": phases})
    assert fit_phases(run, module, None, tmp_path, 64, FitSettings(tc, "32-true")) is None
    for key, value in module.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_compile_is_auto_by_default_and_old_switch_values_still_read(tmp_path, monkeypatch):
    import pytest

    import lm_shared.runtime as runtime
    from lm_shared.config_cli import instantiate
    from nanologic.cli import _train_parser
    from nanologic.configs import TrainConfig, TrainConfigError
    from nanologic.errors import NanologicError
    from nanologic.runner import _compile_choice

    parser = _train_parser()
    for argv, expected in (([], "auto"), (["--compile"], "on"), (["--compile", "off"], "off")):
        assert instantiate(parser, parser.parse_args(argv), TrainConfig).compile == expected
    assert TrainConfig(compile=True).compile == "on" and TrainConfig(compile=False).compile == "off"
    with pytest.raises(TrainConfigError, match="compile: expected 'auto', 'on' or 'off'"):
        TrainConfig(compile="yes")

    # auto weighs the run's optimizer steps: 700 examples / 32 a batch = 22 a step, x 2 epochs
    (tmp_path / "train.jsonl").write_text('{"x": 1}\n' * 700)
    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++")
    short = _compile_choice(TrainConfig(max_epochs=2), "cpu", tmp_path)
    assert not short.enabled and short.reason == "auto: 44 steps are too few to repay compiling, eager"
    assert _compile_choice(TrainConfig(max_epochs=2, max_steps=5000), "cpu", tmp_path).enabled
    monkeypatch.setattr(runtime, "compile_backend", lambda device: None)
    with pytest.raises(NanologicError, match="^compile on: .*use --compile off"):
        _compile_choice(TrainConfig(compile="on"), "cpu", tmp_path)
    from nanologic.runner import train_run

    with pytest.raises(NanologicError, match="^compile on: .*use --compile off"):
        train_run(tmp_path / "run", train_config=TrainConfig(compile="on"))
    assert not (tmp_path / "run").exists()  # refused before the run folder and its data


def test_a_run_whose_only_epoch_is_the_curriculum_gets_a_note():
    from nanologic.configs import TrainConfig
    from nanologic.runner import curriculum_note

    assert "--no-curriculum" in curriculum_note(TrainConfig(max_epochs=1, curriculum=True))
    assert curriculum_note(TrainConfig(max_epochs=2, curriculum=True)) is None
    assert curriculum_note(TrainConfig(max_epochs=1, curriculum=False)) is None
    assert curriculum_note(TrainConfig(max_epochs=1, max_steps=50)) is None  # steps decide
