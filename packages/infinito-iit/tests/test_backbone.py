"""The training backbone's exactness contract (issue 15, items a-g) on infinito's Lightning trainer.

Faults are injected through Lightning callbacks passed to :func:`infinito_iit.train.train`; every
test runs a tiny model for a few steps on the embedded corpus.
"""

import copy
import json
from dataclasses import replace

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from infinito_iit.data import load_corpus, prepare_data
from infinito_iit.model import InfinitoConfig
from infinito_iit.train import TrainConfig, train
from lm_shared.runs import RunFolderError

MODEL = InfinitoConfig(
    vocab_size=300,
    max_seq_len=32,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    memory_slots=8,
    memory_writes=2,
    segment_len=4,
    complexity_window=4,
)
TRAIN = TrainConfig(
    vocab_size=300, seq_len=32, batch_size=4, max_steps=6, eval_every=3, proxy_k=0, plateau_patience=50
)


@pytest.fixture(scope="module")
def data():
    return prepare_data(load_corpus(None), 32, vocab_size=300)


def quiet(msg):
    pass


def run(tmp, data, config=TRAIN, callbacks=(), model=MODEL, **kwargs):
    return train(
        model, config, tmp, data=data, log=quiet, progress=False, callbacks=list(callbacks), **kwargs
    )


def grad_health(run_dir):
    return [json.loads(line) for line in (run_dir / "grad_health.jsonl").read_text().splitlines()]


def assert_same(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), path


class InjectGrad(L.Callback):
    """Set one gradient to ``value`` on the first ``times`` attempts of each optimizer step numbered
    in ``steps`` (1-based). A skipped step is not counted, so the next batch attempts it again."""

    def __init__(self, steps, value=float("nan"), times=1):
        self.steps, self.value, self.times = set(steps), value, times
        self.attempts = {}

    def on_after_backward(self, trainer, pl_module):
        step = trainer.global_step + 1
        if step in self.steps and self.attempts.get(step, 0) < self.times:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.fill_(self.value)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step + 1
        self.attempts[step] = self.attempts.get(step, 0) + 1


class Snapshot(L.Callback):
    """The whole training state just before the first attempt of optimizer step ``k`` and after
    that batch."""

    def __init__(self, k):
        self.k = k
        self.before = self.after = None

    @staticmethod
    def state(trainer, pl_module):
        return copy.deepcopy(
            {
                "model": pl_module.state_dict(),
                "optimizer": trainer.optimizers[0].state_dict(),
                "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
                "rng": torch.get_rng_state(),
            }
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step + 1 == self.k and self.before is None:
            self.before = self.state(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.before is not None and self.after is None:
            self.after = self.state(trainer, pl_module)


class CrashAt(L.Callback):
    """Simulate a crash (an exception; the subprocess test uses kill -9) after optimizer step ``k``."""

    def __init__(self, k):
        self.k = k

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.k:
            raise RuntimeError("simulated crash")


def test_a_nan_gradient_is_skipped_and_leaves_the_whole_state_equal(tmp_path, data):
    snap = Snapshot(4)
    result = run(tmp_path / "r", data, callbacks=[InjectGrad({4}), snap])
    before, after = snap.before, snap.after
    # Only the random stream moves (the step drew dropout and noise); everything trained is equal,
    # the step counter included: the skipped step is attempted again by the next batch.
    assert not torch.equal(before.pop("rng"), after.pop("rng"))
    assert_same(before, after)
    log = grad_health(tmp_path / "r")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 4, 5, 6]
    assert log[3]["repair_action"] == "skip" and log[3]["has_nan"]
    assert log[4]["repair_action"] in ("none", "clip")  # training goes on
    assert result.history["train"][3]["repair"] == "skip"
    assert result.final["steps"] == 6  # six applied updates


def test_c_lr_halving_lasts_under_the_plateau_schedule(tmp_path, data):
    result = run(
        tmp_path / "r", data, replace(TRAIN, max_steps=8), callbacks=[InjectGrad({2}, float("inf"), times=2)]
    )
    lrs = [e["lr"] for e in result.history["train"]]
    repairs = [e["repair"] for e in result.history["train"]]
    assert repairs[1:3] == ["skip", "lr_halved"]
    assert lrs[0] == TRAIN.lr and all(lr == TRAIN.lr / 2 for lr in lrs[2:])  # evals at 3 and 6 kept it


def test_d_memory_and_scheduler_advance_once_per_optimizer_step(tmp_path, data):
    cfg = replace(TRAIN, grad_accum=2, batch_size=2, max_steps=6, eval_every=2)
    seen = {}

    class Count(L.Callback):
        def on_train_end(self, trainer, pl_module):
            seen["memory_step"] = int(pl_module.model.memory.step)
            seen["plateau_steps"] = trainer.lr_scheduler_configs[0].scheduler.last_epoch

    run(tmp_path / "r", data, cfg, callbacks=[InjectGrad({3}), Count()])
    assert seen["memory_step"] == 6  # 6 optimizer steps of 2 micro-batches, one more attempt skipped
    assert seen["plateau_steps"] == 3  # one per validation (every 4 batches of 14), never per batch


def test_d_accumulation_pools_memory_writes_like_one_larger_batch(tmp_path, data):
    model = replace(MODEL, dropout=0.0, noise_std=0.0)
    whole = run(tmp_path / "a", data, replace(TRAIN, max_steps=3), model=model)
    accum = run(tmp_path / "b", data, replace(TRAIN, max_steps=3, batch_size=2, grad_accum=2), model=model)
    assert [e["loss"] for e in whole.history["train"]] == pytest.approx(
        [e["loss"] for e in accum.history["train"]], rel=1e-5
    )
    assert torch.allclose(whole.model.memory.slots, accum.model.memory.slots, atol=1e-5)


@pytest.mark.parametrize("where", ["mid-epoch", "end-of-epoch"])
def test_e_crash_and_resume_gives_the_same_weights_and_logged_losses(tmp_path, data, where):
    epoch = len(data.train) // TRAIN.batch_size
    if where == "mid-epoch":
        cfg, crash = replace(TRAIN, max_steps=7, eval_every=3), 5  # checkpoint at 3, not an epoch end
    else:
        cfg, crash = replace(TRAIN, max_steps=epoch + 2, eval_every=epoch), epoch + 1
    straight = run(tmp_path / "a", data, cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", data, cfg, callbacks=[CrashAt(crash)])
    state = json.loads((tmp_path / "b" / "run.json").read_text())
    assert state["status"] == "interrupted"
    with pytest.raises(RunFolderError, match="--resume"):
        run(tmp_path / "b", data, cfg)  # not restarted silently beside the checkpoint
    resumed = run(tmp_path / "b", data, cfg, resume=True)
    a = [e["loss"] for e in straight.history["train"]]
    b = [e["loss"] for e in resumed.history["train"]]
    assert len(b) == cfg.max_steps and a == pytest.approx(b, rel=1e-5)
    assert [r["step"] for r in grad_health(tmp_path / "b")] == list(range(1, cfg.max_steps + 1))
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_f_checkpoints_do_not_depend_on_compile(tmp_path, data, monkeypatch):
    real_compile = torch.compile
    compiled: list[str] = []

    def eager_backend_compile(model, options=None):
        compiled.append(type(model).__name__)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_backend_compile)
    from lm_shared import runtime

    monkeypatch.setattr(runtime, "compile_backend", lambda device: "g++")  # not needed by the eager backend
    cfg = replace(TRAIN, max_steps=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "c", data, replace(cfg, compile=True), callbacks=[CrashAt(4)])
    assert compiled == ["InfinitoLM"]
    run(tmp_path / "p", data, replace(cfg, max_steps=3))
    keys = torch.load(tmp_path / "c" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"].keys()
    plain_keys = torch.load(tmp_path / "p" / "checkpoints" / "last.ckpt", weights_only=False)[
        "state_dict"
    ].keys()
    assert keys == plain_keys and not any("_orig_mod" in k for k in keys)
    resumed = run(tmp_path / "c", data, cfg, resume=True)  # saved with --compile, resumed without
    assert resumed.history["train"][-1]["step"] == 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "d", data, cfg, callbacks=[CrashAt(4)])
    assert (
        run(tmp_path / "d", data, replace(cfg, compile=True), resume=True).history["train"][-1]["step"] == 5
    )


def test_g_a_kill_during_a_checkpoint_write_keeps_the_last_checkpoint_readable(tmp_path, data, monkeypatch):
    import lm_shared.runs_lightning as rl

    class Killed(BaseException):
        pass

    real_save = torch.save
    saves = []

    def dying_save(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 3:  # the second evaluation's best.ckpt is written, then its last.ckpt dies
            with open(path, "wb") as fh:
                fh.write(b"torn")
            raise Killed
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(rl.torch, "save", dying_save)
    with pytest.raises(Killed):
        run(tmp_path / "r", data, replace(TRAIN, max_steps=6, eval_every=2))
    monkeypatch.setattr(rl.torch, "save", real_save)
    last = tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2  # the previous, whole file
    assert not list(last.parent.glob("*.tmp*"))
    resumed = run(tmp_path / "r", data, replace(TRAIN, max_steps=6, eval_every=2), resume=True)
    assert resumed.history["train"][-1]["step"] == 6
    with pytest.raises(RunFolderError, match="already finished"):
        run(tmp_path / "r", data, replace(TRAIN, max_steps=6, eval_every=2), resume=True)


def test_a_non_finite_training_stops_with_an_error_and_saves_no_model(tmp_path, data):
    from lm_shared.runs import NonFiniteError

    with pytest.raises(NonFiniteError, match="non-finite"):
        run(tmp_path / "r", data, replace(TRAIN, max_steps=12), callbacks=[InjectGrad({2}, times=100)])
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_resume_from_a_truncated_last_checkpoint_names_it(tmp_path, data):
    # `train --resume` over a truncated checkpoints/last.ckpt ended in a torch traceback.
    from infinito_iit.errors import InfinitoError

    cfg = replace(TRAIN, max_steps=7, eval_every=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", data, cfg, callbacks=[CrashAt(5)])
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(InfinitoError, match=r"last\.ckpt: damaged checkpoint, cannot resume"):
        run(tmp_path / "b", data, cfg, resume=True)
