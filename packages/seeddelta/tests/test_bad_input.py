"""Section 8: clear errors naming the tensor, key or field; the input file is never modified."""

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from lm_shared.cli_help import options_without_help
from seeddelta.cli import main


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(argv)
    return rc, capsys.readouterr().err


def _gguf_without(src: Path, dst: Path, drop: str) -> Path:
    reader = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), "llama")
    for name, f in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment"):
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    for t in reader.tensors:
        if t.name != drop:
            w.add_tensor(t.name, np.asarray(t.data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def test_missing_tensor(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _gguf_without(tiny_gguf, tmp_path / "broken.gguf", "blk.1.ffn_up.weight")
    before = _sha(broken)
    rc, err = _run(["build", "-i", str(broken), "-o", str(tmp_path / "o.gguf"), "--quiet"], capsys)
    assert rc == 2 and "blk.1.ffn_up.weight" in err and "missing" in err
    assert not (tmp_path / "o.gguf").exists()
    rc, err = _run(["eval", "--model", str(broken), "--samples", "3"], capsys)
    assert rc == 2 and "blk.1.ffn_up.weight" in err
    assert _sha(broken) == before


def test_k_larger_than_n_in(tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _sha(tiny_gguf)
    rc, err = _run(
        ["build", "-i", str(tiny_gguf), "-o", str(tmp_path / "o.gguf"), "--K", "65", "--quiet"], capsys
    )
    assert rc == 2 and "blk.0.ffn_gate: K=65 is larger than n_in=64" in err
    assert _sha(tiny_gguf) == before


def test_index_type_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from seeddelta.delta import DeltaConfig, encode
    from seeddelta.errors import SeedDeltaError

    with pytest.raises(
        SeedDeltaError, match="blk.3.ffn_down: idx-type i16 holds indices up to 32767 but n_in=40000"
    ):
        encode(np.zeros((2, 40000)), DeltaConfig(K=4, idx_type="i16"), name="blk.3.ffn_down")


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("{not json", "line 1 column 2: invalid JSON"),
        ('{"version": 2}', "field 'version' must be 1"),
        ('{"version": 1, "defaults": {"K": "many"}}', "defaults.K: expected a number"),
        ('{"version": 1, "ranges": [{"layers": "3-1"}]}', "ranges[0].layers: bad layer range '3-1'"),
        ('{"version": 1, "ranges": [{"K": 3}]}', "ranges[0]: field 'layers' is missing"),
        ('{"version": 1, "layers": {"x": {}}}', "layers: key 'x' is not a layer number"),
        (
            '{"version": 1, "defaults": {"gating": {"metric": "l2"}}}',
            "defaults.gating.metric: expected one of",
        ),
        ('{"version": 1, "defaults": {"tensors": {"attn_q": {}}}}', "unknown tensor 'attn_q'"),
        ('{"version": 1, "defaults": {"gating": {"min_mean": {"side": 1}}}}', "unknown keys ['side']"),
        (
            '{"version": 1, "defaults": {"autotune": {"enabled": true, "max_iters": 0}}}',
            "defaults.autotune.max_iters: expected a positive integer, got 0",
        ),
    ],
)
def test_malformed_policy(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str, message: str
) -> None:
    pfile = tmp_path / "policy.json"
    pfile.write_text(policy)
    rc, err = _run(
        ["build", "-i", str(tiny_gguf), "-o", str(tmp_path / "o.gguf"), "--policy", str(pfile), "--quiet"],
        capsys,
    )
    assert rc == 2
    assert str(pfile) in err and message in err
    assert "Traceback" not in err


def test_policy_layer_outside_model_strict(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps({"version": 1, "layers": {"9": {"K": 4}}}))
    rc, err = _run(
        [
            "build",
            "-i",
            str(tiny_gguf),
            "-o",
            str(tmp_path / "o.gguf"),
            "--policy",
            str(pfile),
            "--policy-strict",
            "--quiet",
        ],
        capsys,
    )
    assert rc == 2 and "layer 9 does not exist" in err


@pytest.mark.parametrize("damage", ["truncate", "magic", "garbage"])
def test_corrupted_gguf(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    data = tiny_gguf.read_bytes()
    bad = tmp_path / "bad.gguf"
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 3])
    elif damage == "magic":
        bad.write_bytes(b"XXXX" + data[4:])
    else:
        bad.write_bytes(data[:24] + b"\xff" * 64 + data[88:])
    before = _sha(bad)
    for argv in (
        ["build", "-i", str(bad), "-o", str(tmp_path / "o.gguf"), "--quiet"],
        ["eval", "--model", str(bad)],
    ):
        rc, err = _run(argv, capsys)
        assert rc == 2, argv
        assert str(bad) in err and "Traceback" not in err
    assert _sha(bad) == before
    assert not (tmp_path / "o.gguf").exists()


def test_output_may_not_overwrite_input(tiny_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _sha(tiny_gguf)
    rc, err = _run(["build", "-i", str(tiny_gguf), "-o", str(tiny_gguf), "--quiet"], capsys)
    assert rc == 2 and "overwrite the input" in err
    assert _sha(tiny_gguf) == before


def test_missing_imatrix_entry_and_bad_imatrix(
    tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seeddelta.builder import BuildConfig, build
    from seeddelta.calibrate import write_imatrix

    imat = write_imatrix(tmp_path / "imat.gguf", {"blk.0.ffn_gate": np.ones((4, 64))})
    report = build(
        BuildConfig(
            input=str(tiny_gguf), output=str(tmp_path / "o.gguf"), layers="0", K=4, imatrix=str(imat)
        ),
        progress=False,
    )
    by = {w["name"]: w["decision"] for w in report["weights"]}
    assert by["blk.0.ffn_gate"] == "no_gating" and by["blk.0.ffn_down"] == "missing_imatrix"
    rc, err = _run(
        [
            "build",
            "-i",
            str(tiny_gguf),
            "-o",
            str(tmp_path / "o2.gguf"),
            "--imatrix",
            str(tiny_gguf),
            "--quiet",
        ],
        capsys,
    )
    assert rc == 2 and "in_sum2" in err


def test_tiny_train_and_export_help_describe_every_option():
    from seeddelta.cli import COMMANDS

    for name in ("tiny train", "tiny export"):
        assert options_without_help(COMMANDS[name].parser()) == [], name
