"""Training smoke test, evaluation protocol, export to llama.cpp, scan, baselines, bench, CLI."""

import importlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch

import seeddelta
from seeddelta.cli import main, train_main
from seeddelta.evaluate import evaluate_model, packed_perplexity
from seeddelta.tasks import validation_set


def test_import_every_module() -> None:
    for mod in pkgutil.iter_modules(seeddelta.__path__):
        importlib.import_module(f"seeddelta.{mod.name}")


SMALL = ["--num-layers", "2", "--hidden-size", "32", "--intermediate-size", "64", "--num-heads", "2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    rc = train_main(
        ["--out", str(out), "--steps", "3", "--val-samples", "6", "--docs-per-step", "4", "--quiet", *SMALL]
    )
    assert rc == 0
    return out


def test_train_smoke_writes_eval_json(trained_run: Path) -> None:
    report = json.loads((trained_run / "eval.json").read_text())
    assert set(report["exact_match"]) == {"copy", "sum", "brackets"}
    for key in ("answer_nll", "greedy_pack_pass", "ppl", "train_seconds"):
        assert key in report
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["model"]["num_layers"] == 2 and cfg["train"]["steps"] == 3
    assert (trained_run / "tokenizer.json").is_file() and (trained_run / "model.pt").is_file()


def test_default_model_is_the_seed_proposal() -> None:
    from lm_shared.config_cli import parse
    from seeddelta.cli import COMMANDS

    args, _ = parse(COMMANDS["tiny train"].parser(), ["--out", "x"])
    assert (args.num_layers, args.hidden_size, args.intermediate_size, args.num_heads) == (8, 192, 768, 6)


def test_evaluate_protocol_keys_and_self_kl(tiny_model, tiny_tok) -> None:
    samples = validation_set(1, 6)
    r = evaluate_model(tiny_model, tiny_tok, samples, reference=tiny_model)
    assert set(r["exact_match"]) == {"copy", "sum", "brackets"}
    assert abs(r["kl_to_reference"]) < 1e-6
    assert isinstance(r["greedy_pack_pass"], bool) and r["greedy_pack"].endswith("/6")
    assert r["ppl"] > 1


def test_packed_ppl_equals_per_sample_scoring(tiny_model, tiny_tok) -> None:
    """Packing with document masks and restarted positions scores exactly what one-by-one does."""
    import torch.nn.functional as F

    from seeddelta.evaluate import BOS_ID, EOS_ID

    samples = validation_set(1, 5)
    packed = packed_perplexity(tiny_model, tiny_tok, samples, seq_len=256)
    nll, n = 0.0, 0
    for s in samples:
        ids = torch.tensor([[BOS_ID, *tiny_tok.encode(s.text), EOS_ID]])
        logp = F.log_softmax(tiny_model(ids)[0][0, :-1], -1)
        nll -= logp.gather(-1, ids[0, 1:, None]).sum().item()
        n += ids.shape[1] - 1
    assert packed["ppl"] == pytest.approx(np.exp(nll / n), rel=1e-4)


def test_export_runs_in_llamacpp_with_same_greedy(tiny_model, tiny_tok, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from lm_shared.gguf import compare_with_llamacpp
    from seeddelta.evaluate import encode_sample
    from seeddelta.gguf_io import write_model_gguf

    path = write_model_gguf(tiny_model, tiny_tok, tmp_path / "t.gguf", dtype="f32")
    prompt = encode_sample(tiny_tok, validation_set(1, 1)[0]).prompt

    def ref(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return tiny_model(torch.tensor([ids]))[0][0].double().numpy()

    r = compare_with_llamacpp(path, ref, prompt, n_greedy=12)
    assert r["greedy_equal"] and r["argmax_agreement"] == 1.0 and r["max_abs_diff"] < 1e-3


def test_tiny_export_cli_and_reload(trained_run: Path, tmp_path: Path) -> None:
    run = trained_run
    for dtype in ("f16", "f32"):
        assert (
            main(
                [
                    "tiny",
                    "export",
                    "--checkpoint",
                    str(run),
                    "--out",
                    str(tmp_path / f"m.{dtype}.gguf"),
                    "--dtype",
                    dtype,
                ]
            )
            == 0
        )
    from seeddelta.gguf_io import load_gguf_model
    from seeddelta.train import load_checkpoint

    ref, tok, _ = load_checkpoint(run)
    back, tok2, _ = load_gguf_model(tmp_path / "m.f32.gguf")
    ids = torch.tensor([tok.encode("### TASK\ncopy\n")])
    torch.testing.assert_close(back(ids)[0], ref(ids)[0], atol=1e-5, rtol=1e-5)
    assert tok2.encode("12+7 ab\n") == tok.encode("12+7 ab\n")


def test_eval_cli_with_reference(tiny_gguf: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_gguf),
                "--reference",
                str(tiny_gguf),
                "--samples",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    for key in ("exact_match", "answer_nll", "kl_to_reference", "greedy_pack_pass", "ppl"):
        assert key in r
    assert abs(r["kl_to_reference"]) < 1e-6


def test_scan_outputs(tiny_gguf: Path, tmp_path: Path) -> None:
    assert (
        main(
            [
                "scan",
                "--model",
                str(tiny_gguf),
                "--out",
                str(tmp_path),
                "--K",
                "8",
                "--samples",
                "6",
                "--quiet",
            ]
        )
        == 0
    )
    r = json.loads((tmp_path / "scan.json").read_text())
    fams = {s["family"] for s in r["sets"]}
    assert fams == {"single", "even", "odd", "interleaved", "growing"}
    assert {"growing", "interleaved"} == set(r["first_cliff"])
    assert len(r["fragile_layers"]) == 2
    assert (tmp_path / "scan.png").stat().st_size > 1000
    assert "| layer |" in (tmp_path / "fragile_layers.md").read_text()
    json.loads((tmp_path / "policy.recommended.json").read_text())


def test_baselines_table(tiny_gguf: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    assert (
        main(
            [
                "baselines",
                "--model",
                str(tiny_gguf),
                "--out",
                str(tmp_path),
                "--densities",
                "0.25",
                "--samples",
                "6",
                "--calib-samples",
                "20",
                "--llamacpp-samples",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "baselines.json").read_text())["rows"]
    by = {r["method"]: r for r in rows}
    assert set(by) == {"base_f32", "q8_0", "q4_0", "seeddelta", "seeddelta_refit", "magnitude"}
    assert by["q8_0"]["bits_per_ffn_weight"] == 8.5
    assert by["q8_0"]["kl_to_reference"] < by["q4_0"]["kl_to_reference"]
    assert by["seeddelta"]["llamacpp_answer_agreement"] == 1.0
    assert by["seeddelta_refit"]["act_rel_l2_mean"] < by["seeddelta"]["act_rel_l2_mean"]
    assert (tmp_path / "quality_vs_bytes.png").is_file()


def test_bench_keys(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--out",
                str(out),
                "--n-in",
                "256",
                "--n-out",
                "512",
                "--repeats",
                "2",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    for key in ("build_weights_per_s", "forward_ratio_k16", "forward_ratio_k64", "forward_ratio_k256"):
        assert r[key] > 0
    # Issue 16: the tiny model's default training step, profiled, with its FLOPs and MFU.
    split = r["tiny_train_profile"]["split_fraction"]
    assert abs(sum(split.values()) - 1) < 0.02 and split["matmul"] > 0 and split["python_data"] > 0
    assert r["tiny_train_flops_per_step"] > 0 and 0 < r["tiny_train_mfu_fp32"] < 1


@pytest.mark.slow
def test_full_training_reaches_the_issue_targets(tmp_path: Path) -> None:
    """The real run (about 12 minutes on 2 free cores): the issue's exact-match targets."""
    assert train_main(["--out", str(tmp_path / "run"), "--quiet"]) == 0
    em = json.loads((tmp_path / "run" / "eval.json").read_text())["exact_match"]
    assert em["copy"] >= 0.95 and em["brackets"] >= 0.95 and em["sum"] >= 0.80


def test_eval_on_llamacpp_quantized_file(tiny_gguf: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    q8 = tmp_path / "q8.gguf"
    assert (
        main(["quantize", "--model", str(tiny_gguf), "--out", str(q8), "--type", "q8_0", "--threads", "1"])
        == 0
    )
    from lm_shared.gguf import read_gguf

    assert read_gguf(q8, load_tensors=False).tensor_types["blk.0.ffn_up.weight"] == "Q8_0"
    out = tmp_path / "e.json"
    assert (
        main(
            ["eval", "--model", str(q8), "--reference", str(tiny_gguf), "--samples", "6", "--json", str(out)]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert 0 <= r["kl_to_reference"] < 0.05
