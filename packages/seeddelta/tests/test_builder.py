"""Builder: fork tensor names and keys, report fields, round trip through SeedDeltaLinear."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lm_shared.gguf import read_gguf
from seeddelta.builder import BuildConfig, build
from seeddelta.cli import main
from seeddelta.gguf_io import load_gguf_model
from seeddelta.linear import SeedDeltaLinear


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_writes_fork_layout(tiny_gguf: Path, tmp_path: Path) -> None:
    before = _sha(tiny_gguf)
    out = tmp_path / "sd.gguf"
    report = build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(out),
            layers="1",
            K=8,
            base=True,
            row_scale=True,
            eval_cols=16,
            eval_x=4,
            strip_dense=True,
            report_json=str(tmp_path / "r.json"),
        ),
        progress=False,
    )
    assert _sha(tiny_gguf) == before  # the input is never modified
    c = read_gguf(out)
    md, t = c.metadata, c.tensors
    assert md["seeddelta.enabled"] is True and md["seeddelta.version"] == 1 and md["seeddelta.scheme"] == 0
    assert (
        md["seeddelta.resid.K"] == 8
        and md["seeddelta.strip_dense"] is True
        and md["seeddelta.base.kind"] == 1
    )
    assert md["seeddelta.blk.1.ffn_gate.enabled"] is True and md["seeddelta.blk.1.ffn_gate.K"] == 8
    assert md["tokenizer.ggml.model"] == "gpt2"  # every source key is copied
    assert t["blk.1.ffn_gate.d_idx"].shape == (128, 8) and t["blk.1.ffn_gate.d_idx"].dtype == np.int16
    assert t["blk.1.ffn_gate.d_val"].dtype == np.float16
    assert t["blk.1.ffn_down.d_idx"].shape == (64, 8)
    assert t["blk.1.ffn_up.d_row_scale"].dtype == np.float16
    assert t["blk.1.ffn_gate.base_d2"].shape == (2, 64)  # (B, L) with L = next_pow2(64), B = 128/64
    assert t["blk.1.ffn_gate.base_perm1"].dtype == np.int16
    np.testing.assert_array_equal(t["blk.1.ffn_gate.base_d1"], 1)
    assert "blk.1.ffn_gate.weight" not in t and "blk.0.ffn_gate.weight" in t
    w = report["weights"][0]
    for key in (
        "layer",
        "kind",
        "n_in",
        "n_out",
        "K_budget",
        "K",
        "base_L",
        "base_B",
        "ops_ratio",
        "rel_l2_mean",
        "cos_p05_x_w",
        "norm_ratio_mean_w",
        "gating_pass",
        "targets_used",
        "stack_cost_delta",
        "ffn_score",
        "emit",
        "strip_dense",
        "decision",
        "reject_reason",
        "autotune_attempts",
    ):
        assert key in w, key
    assert w["decision"] == "no_gating" and w["emit"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["resid"]["K"] == 8 and saved["base_kind"] == "xor_circulant"


def test_seeddelta_gguf_loads_through_seeddelta_linear(tiny_gguf: Path, tiny_model, tmp_path: Path) -> None:
    out = tmp_path / "sd.gguf"
    build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(out),
            K=16,
            base=True,
            row_scale=True,
            val_type="f32",
            idx_type="i32",
            strip_dense=True,
        ),
        progress=False,
    )
    model, _, info = load_gguf_model(out)
    assert len(info["seeddelta"]) == 6
    lin = model.model.layers[0].mlp.gate_proj
    assert isinstance(lin, SeedDeltaLinear)
    # the stored representation reproduces the builder's reconstruction of the base weight's top-K
    W = tiny_model.model.layers[0].mlp.gate_proj.weight.detach().double().numpy()
    from seeddelta.delta import DeltaConfig, encode

    enc = encode(
        W,
        DeltaConfig(K=16, base="xor", row_scale=True, val_type="f32", idx_type="i32"),
        rng=np.random.default_rng(1234),
    )
    torch.testing.assert_close(lin.dense_weight().double(), torch.from_numpy(enc.dense()), atol=2e-3, rtol=0)


def test_block_scheme_and_cyclic_base_round_trip(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "blk.gguf"
    build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(out),
            layers="0",
            K=10,
            scheme="block",
            block=4,
            base=True,
            base_kind="cyclic",
        ),
        progress=False,
    )
    t = read_gguf(out).tensors
    assert t["blk.0.ffn_up.b_idx"].shape == (128, 3) and t["blk.0.ffn_up.b_val"].shape == (128, 3, 4)
    assert "blk.0.ffn_up.base_cyc" in t
    model, _, _ = load_gguf_model(out)
    assert isinstance(model.model.layers[0].mlp.up_proj, SeedDeltaLinear)
    assert model(torch.tensor([[1, 5, 6]]))[0].isfinite().all()


def test_policy_gating_and_autotune(tiny_gguf: Path, tmp_path: Path) -> None:
    policy = {
        "version": 1,
        "defaults": {"gating": {"metric": "cos_x_w", "min_mean": 0.99, "min_p05": 0.99}},
        "layers": {"1": {"enabled": False}},
        "ranges": [
            {
                "layers": "0",
                "autotune": {"enabled": True, "schedule_gate_up": [4, 64], "schedule_down": [8, 128]},
                "tensors": {"ffn_down": {"gating": {"min_mean": -1}}},
            }
        ],
    }
    pfile = tmp_path / "policy.json"
    pfile.write_text(json.dumps(policy))
    report = build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(tmp_path / "o.gguf"),
            K=4,
            eval_cols=32,
            eval_x=8,
            policy=str(pfile),
            policy_export=str(tmp_path / "resolved.json"),
        ),
        progress=False,
    )
    by = {w["name"]: w for w in report["weights"]}
    gate = by["blk.0.ffn_gate"]
    assert [a["K_budget"] for a in gate["autotune_attempts"]] == [4, 64]
    assert gate["decision"] == "pass_gating" and gate["K"] == 64  # K = n_in keeps everything
    assert by["blk.0.ffn_down"]["decision"] == "no_gating"  # -1 switches gating off
    assert by["blk.1.ffn_gate"]["decision"] == "disabled"
    assert report["policy_hash"].startswith("fnv1a64:")
    assert (
        json.loads((tmp_path / "resolved.json").read_text())["resolved"]["blk.1.ffn_up"]["enabled"] is False
    )


def test_gating_fail_keeps_dense(tiny_gguf: Path, tmp_path: Path) -> None:
    pfile = tmp_path / "p.json"
    pfile.write_text(
        json.dumps({"version": 1, "defaults": {"gating": {"min_mean": 0.999, "min_p05": 0.999}}})
    )
    out = tmp_path / "o.gguf"
    report = build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(out),
            K=2,
            eval_cols=16,
            eval_x=4,
            policy=str(pfile),
            strip_dense=True,
        ),
        progress=False,
    )
    assert {w["decision"] for w in report["weights"]} == {"gating_fail"}
    t = read_gguf(out).tensors
    assert "blk.0.ffn_gate.weight" in t and "blk.0.ffn_gate.d_idx" not in t
    # without metrics gating cannot decide
    r2 = build(
        BuildConfig(input=str(tiny_gguf), output=str(tmp_path / "o2.gguf"), K=2, policy=str(pfile)),
        progress=False,
    )
    assert {w["decision"] for w in r2["weights"]} == {"metric_unavailable"}


def test_cli_build(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "build",
            "-i",
            str(tiny_gguf),
            "-o",
            str(tmp_path / "c.gguf"),
            "--K",
            "4",
            "--layers",
            "0-1",
            "--report-json",
            str(tmp_path / "r.json"),
            "--quiet",
        ]
    )
    assert rc == 0
    assert "6/6 tensors emitted" in capsys.readouterr().out


def test_stack_cost_cap_binds_and_costs_are_positive(tiny_gguf: Path, tmp_path: Path) -> None:
    pfile = tmp_path / "p.json"
    pfile.write_text(
        json.dumps(
            {
                "version": 1,
                "defaults": {"gating": {"min_mean": 0, "min_p05": 0}},
                "stack_guard": {"direction": "off"},
            }
        )
    )
    free = build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(tmp_path / "a.gguf"),
            K=8,
            eval_cols=16,
            eval_x=4,
            policy=str(pfile),
        ),
        progress=False,
    )
    costs = [w["stack_cost_delta"] for w in free["weights"]]
    assert all(c > 0 for c in costs)  # the fork's formula gives 0 for every passing tensor
    cap = costs[0] + 0.5 * min(costs[1:])
    capped = build(
        BuildConfig(
            input=str(tiny_gguf),
            output=str(tmp_path / "b.gguf"),
            K=8,
            eval_cols=16,
            eval_x=4,
            policy=str(pfile),
            stack_cost_cap=cap,
        ),
        progress=False,
    )
    decisions = [w["decision"] for w in capped["weights"]]
    assert decisions[0] == "pass_gating" and "stack_cost_cap" in decisions
    assert capped["stack_cost_total"] <= cap


def test_imatrix_cli_and_weighted_build(tiny_gguf: Path, tmp_path: Path) -> None:
    imat = tmp_path / "imatrix.gguf"
    assert main(["imatrix", "--model", str(tiny_gguf), "--out", str(imat), "--samples", "4"]) == 0
    from seeddelta.calibrate import read_imatrix

    entries = read_imatrix(imat)
    assert entries["blk.0.ffn_gate"].shape == (64,) and entries["blk.1.ffn_down"].shape == (128,)
    np.testing.assert_array_equal(entries["blk.0.ffn_gate"], entries["blk.0.ffn_up"])
    report = build(
        BuildConfig(
            input=str(tiny_gguf), output=str(tmp_path / "w.gguf"), K=4, imatrix=str(imat), eval_cols=8
        ),
        progress=False,
    )
    assert all(w["decision"] == "no_gating" for w in report["weights"])
    assert report["imatrix"]["file"] == str(imat)
