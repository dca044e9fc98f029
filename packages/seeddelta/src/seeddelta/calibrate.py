"""Calibration activations: the inputs each FFN projection sees on real text, and the importance
matrix (mean squared activation per input column, llama.cpp's imatrix) computed from them.

The importance matrix is stored in llama.cpp's GGUF imatrix layout: ``<tensor>.in_sum2`` (sum of
x^2 per column) and ``<tensor>.counts`` (number of rows), so ``in_sum2 / counts`` is the imatrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lm_shared.tokenization import BPETokenizer
from seeddelta.errors import SeedDeltaError
from seeddelta.evaluate import encode_sample
from seeddelta.model import TinyLlama
from seeddelta.tasks import Sample


@torch.no_grad()
def capture_ffn_inputs(
    model: TinyLlama, tok: BPETokenizer, samples: Sequence[Sample], max_rows: int = 4096, seed: int = 0
) -> dict[str, np.ndarray]:
    """``blk.N.ffn_{gate,up,down}`` -> activations (rows, n_in) fed to that projection.

    gate and up share their input (the post-attention RMSNorm output). At most ``max_rows`` rows
    are kept per tensor, sampled uniformly without replacement.
    """
    store: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        for hf, kind in (("gate_proj", "ffn_gate"), ("down_proj", "ffn_down")):
            name = f"blk.{i}.{kind}"

            def hook(
                _m: torch.nn.Module, inp: tuple[torch.Tensor, ...], _out: torch.Tensor, name: str = name
            ) -> None:
                store.setdefault(name, []).append(inp[0].reshape(-1, inp[0].shape[-1]).float().cpu())

            hooks.append(getattr(layer.mlp, hf).register_forward_hook(hook))
    try:
        for start in range(0, len(samples), 32):
            for s in samples[start : start + 32]:
                e = encode_sample(tok, s)
                model(torch.tensor([e.prompt + e.answer]))
    finally:
        for h in hooks:
            h.remove()
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, parts in store.items():
        X = torch.cat(parts).numpy().astype(np.float64)
        if len(X) > max_rows:
            X = X[np.sort(rng.choice(len(X), size=max_rows, replace=False))]
        out[name] = X
        if "ffn_gate" in name:
            out[name.replace("ffn_gate", "ffn_up")] = X
    return out


def write_imatrix(path: Path, activations: dict[str, np.ndarray]) -> Path:
    """Write activations' sum of squares in llama.cpp's GGUF imatrix layout."""
    import gguf

    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    w = gguf.GGUFWriter(str(tmp), "imatrix")
    w.add_string("general.type", "imatrix")
    for name, X in sorted(activations.items()):
        w.add_tensor(f"{name}.weight.in_sum2", (X**2).sum(axis=0).astype(np.float32)[None, :])
        w.add_tensor(f"{name}.weight.counts", np.array([[float(len(X))]], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def read_imatrix(path: Path) -> dict[str, np.ndarray]:
    """``blk.N.ffn_*`` -> imatrix vector (mean x^2 per input column)."""
    from lm_shared.gguf import GGUFError, read_gguf

    try:
        contents = read_gguf(path)
    except GGUFError as exc:
        raise SeedDeltaError(f"imatrix {exc}") from None
    out: dict[str, np.ndarray] = {}
    for name, arr in contents.tensors.items():
        if name.endswith(".in_sum2"):
            base = name[: -len(".in_sum2")]
            counts = contents.tensors.get(base + ".counts")
            if counts is None:
                raise SeedDeltaError(f"{path}: tensor {base}.counts is missing")
            n = float(np.asarray(counts).reshape(-1)[0])
            out[base.removesuffix(".weight")] = np.asarray(arr, dtype=np.float64).reshape(-1) / max(n, 1.0)
    if not out:
        raise SeedDeltaError(f"{path}: no '<tensor>.in_sum2' entries; not a GGUF imatrix file")
    return out
