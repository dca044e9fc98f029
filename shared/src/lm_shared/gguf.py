r"""Write LLaMA-architecture GGUF files, read them back, and check them in real llama.cpp.

The writer takes a state dict in Hugging Face ``LlamaForCausalLM`` naming, so any package can
map its own module names once and reuse the rest. llama.cpp runs the ``llama`` architecture with
rope type NORM, which rotates adjacent pairs (2i, 2i+1); HF-style "rotate-half" models pair
(i, i + d/2), so their Q and K rows are permuted per head here (K per KV head), exactly as the
upstream converter does. Tokenizers are stored as ``gpt2`` byte-level BPE (tokens, merges,
token types, bos/eos/pad ids). Facts and pitfalls: ``shared/docs/gguf-feasibility.md`` in the
research notes; the F32/F32-KV round trip agrees with PyTorch to about 1e-6.

Text, not only ids (the contract llama.cpp users rely on):

* ``tokenizer.ggml.pre = "gpt-2"`` (:data:`TOKENIZER_PRE`). llama.cpp (``llama-vocab.cpp``,
  ``LLAMA_VOCAB_PRE_TYPE_GPT2``) splits with ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
  ?[^\s\p{L}\p{N}]+|\s+(?!\S)`` (hand-coded in ``unicode.cpp``,
  ``unicode_regex_split_custom_gpt2``, which also covers the trailing ``\s+``): the regex of
  ``tokenizers``' ``ByteLevel(use_regex=True)`` that :func:`lm_shared.tokenization.train_bpe`
  uses. The older ``"default"`` split digits into groups of three and punctuation runs apart, so
  prompts with numbers (and every `` |`` of a full sequence) were tokenized differently.
  :func:`check_text_contract` refuses such files with a message to re-export.
* llama.cpp's ``gpt-2`` pre-tokenizer also turns on ``clean_spaces`` in the C function
  ``llama_detokenize`` (a space before ``? ! . ,`` is dropped, ``" 's"``-style contractions
  joined). ``llama-cli`` and ``llama-cpp-python``'s ``detokenize`` render token by token
  (``llama_token_to_piece``) and do not apply it, so their text equals ``tokenizers``' decode.
* Token types: special tokens that are part of a model's visible output (``rendered_specials``,
  e.g. nanologic's section markers) are ``USER_DEFINED``, so ``llama-cli`` without ``--special``
  and ``detokenize`` without ``special=True`` print them, and llama.cpp matches them in prompt
  text even when special-token parsing is off; the other specials (pad/bos/eos/unk) stay
  ``CONTROL`` and are hidden, as usual. llama.cpp forces a few well-known names to CONTROL
  whatever the file says (``<|end|>``, ``<|im_end|>``, ``<|endoftext|>``, ``<eos>``... in
  ``llama-vocab.cpp``), so a rendered marker must not use one of those names.
* ``llama-cpp-python``'s ``detokenize`` drops one leading space when the first id is bos
  (a LLaMA-1 habit); decode generated ids without the prompt, as the front-ends do.
* Unicode: our tokenizer normalises to NFC; llama.cpp applies no normaliser. Text front-ends must
  normalise to NFC before tokenizing (``unicodedata.normalize("NFC", text)``); the file records
  ``lm_shared.tokenizer.normalizer = "NFC"`` so a reader knows.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lm_shared.errors import UserError
from lm_shared.tokenization import BPETokenizer


class GGUFError(UserError, ValueError):
    """A GGUF file or its inputs are unusable; the message names the file, tensor or key."""


TOKENIZER_PRE = "gpt-2"  # llama.cpp's name for the GPT-2 split our byte-level BPE uses
NORMALIZER_KEY = "lm_shared.tokenizer.normalizer"


@dataclass(frozen=True)
class LlamaGGUFConfig:
    """The llama hyperparameters a GGUF records (``llama.*`` keys), checked on construction.

    Attributes:
        vocab_size: rows of the embedding (and output) matrix.
        hidden_size: model width.
        intermediate_size: SwiGLU hidden width.
        num_layers: transformer blocks.
        num_heads: query heads.
        num_kv_heads: key/value heads (grouped-query attention when fewer than ``num_heads``).
        context_length: longest sequence the model was trained for, in tokens.
        rms_norm_eps: epsilon inside RMSNorm.
        rope_theta: RoPE base frequency.
        name: ``general.name``.

    Raises:
        GGUFError: a size below 1, ``hidden_size`` not divisible by ``num_heads``, ``num_heads``
            not a multiple of ``num_kv_heads``, or an odd ``head_dim`` (RoPE rotates pairs).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    context_length: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    name: str = "model"

    def __post_init__(self) -> None:
        for key in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "context_length",
        ):
            if getattr(self, key) < 1:
                raise GGUFError(f"LlamaGGUFConfig.{key} must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise GGUFError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise GGUFError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise GGUFError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // num_heads`` (also RoPE's dimension count)."""
        return self.hidden_size // self.num_heads


_LLAMA_TENSORS = (
    "token_embd",
    "output_norm",
    "output",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "attn_norm",
    "ffn_norm",
)
"""The llama GGUF tensors our writer emits (``blk.N.`` prefix on the per-layer ones)."""
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


@functools.lru_cache(maxsize=4)
def _llama_name_map(num_blocks: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, num_blocks)


def hf_to_gguf_name(name: str) -> str:
    """Map an HF ``LlamaForCausalLM`` parameter name to its GGUF tensor name.

    The mapping is gguf-py's own ``TensorNameMap`` for ``MODEL_ARCH.LLAMA`` (the table
    llama.cpp's ``convert_hf_to_gguf.py`` uses), restricted to the tensors a llama GGUF holds.

    Args:
        name: e.g. ``"model.layers.3.self_attn.q_proj.weight"``.

    Returns:
        The GGUF name, e.g. ``"blk.3.attn_q.weight"``.

    Raises:
        GGUFError: ``name`` has no llama GGUF equivalent.
    """
    match = _LAYER_RE.match(name)
    blocks = 64 * (int(match.group(1)) // 64 + 1) if match else 64  # one map per 64 layers
    gguf_name = _llama_name_map(blocks).get_name(name, try_suffixes=(".weight", ".bias"))
    kind = re.sub(r"^blk\.\d+\.", "", gguf_name).rsplit(".", 1)[0] if gguf_name else None
    if kind not in _LLAMA_TENSORS:
        raise GGUFError(f"tensor {name!r} has no llama GGUF equivalent (expected HF LlamaForCausalLM names)")
    return gguf_name


def gguf_to_hf_names(num_layers: int) -> dict[str, str]:
    """Map every GGUF tensor name of a llama model back to its HF ``LlamaForCausalLM`` name.

    The inverse of :func:`hf_to_gguf_name`, for reading a llama GGUF back into an HF state dict.

    Args:
        num_layers: the model's transformer blocks (``llama.block_count``).

    Returns:
        ``{gguf_name: hf_name}`` for the embedding, final norm, output head and the nine
        weights of each block (``token_embd.weight`` -> ``model.embed_tokens.weight``, ...).
    """
    hf_names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for layer in range(num_layers):
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        ):
            hf_names.append(f"model.layers.{layer}.{part}.weight")
    return {hf_to_gguf_name(name): name for name in hf_names}


def permute_rotate_half_to_interleaved(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder Q/K projection rows so llama.cpp's adjacent-pair RoPE equals rotate-half RoPE.

    Inside each head, new row 2i is old row i and new row 2i+1 is old row i + head_dim/2: the
    ``permute`` of llama.cpp's ``convert_hf_to_gguf.py`` (``LlamaModel``).

    Args:
        weight: a Q or K projection, ``[n_heads * head_dim, in_features]`` (or a bias
            ``[n_heads * head_dim]``), in HF rotate-half order.
        n_heads: query heads for Q, key/value heads for K.

    Returns:
        An array of the same shape and dtype with the rows of each head interleaved.

    Raises:
        GGUFError: the row count is not ``n_heads`` times an even head size.
    """
    out_features = weight.shape[0]
    if out_features % (2 * n_heads):
        raise GGUFError(f"cannot permute {out_features} rows into {n_heads} heads of even size")
    return (
        weight.reshape(n_heads, 2, out_features // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_interleaved_to_rotate_half(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo :func:`permute_rotate_half_to_interleaved`, for reading a GGUF's Q/K back into HF order.

    Inside each head, new row i is old row 2i and new row i + head_dim/2 is old row 2i+1.

    Args:
        weight: a Q or K projection in llama.cpp's interleaved order, ``[n_heads * head_dim, ...]``.
        n_heads: query heads for Q, key/value heads for K.

    Returns:
        An array of the same shape and dtype in rotate-half order.

    Raises:
        GGUFError: the row count is not ``n_heads`` times an even head size.
    """
    out_features = weight.shape[0]
    if out_features % (2 * n_heads):
        raise GGUFError(f"cannot permute {out_features} rows into {n_heads} heads of even size")
    return (
        weight.reshape(n_heads, out_features // n_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _to_numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().to("cpu")
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        tensor = tensor.numpy()
    return np.ascontiguousarray(tensor)


def _expected_shapes(cfg: LlamaGGUFConfig) -> dict[str, tuple[int, ...]]:
    kv_dim = cfg.num_kv_heads * cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden_size),
        "model.norm.weight": (cfg.hidden_size,),
    }
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (cfg.hidden_size, cfg.hidden_size),
                p + "self_attn.k_proj.weight": (kv_dim, cfg.hidden_size),
                p + "self_attn.v_proj.weight": (kv_dim, cfg.hidden_size),
                p + "self_attn.o_proj.weight": (cfg.hidden_size, cfg.hidden_size),
                p + "mlp.gate_proj.weight": (cfg.intermediate_size, cfg.hidden_size),
                p + "mlp.up_proj.weight": (cfg.intermediate_size, cfg.hidden_size),
                p + "mlp.down_proj.weight": (cfg.hidden_size, cfg.intermediate_size),
                p + "input_layernorm.weight": (cfg.hidden_size,),
                p + "post_attention_layernorm.weight": (cfg.hidden_size,),
            }
        )
    return shapes


def write_llama_gguf(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    config: LlamaGGUFConfig,
    tokenizer: BPETokenizer,
    *,
    dtype: str = "f32",
    rope_layout: str = "half",
    bos_id: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, np.ndarray] | None = None,
    skip_tensors: Sequence[str] = (),
    rendered_specials: Collection[str] = (),
    tokenizer_pre: str = TOKENIZER_PRE,
    add_bos: bool = False,
) -> Path:
    """Write a llama-architecture GGUF that stock llama.cpp loads.

    Tokenization is the ``gpt-2`` pre-tokenizer (see the module docstring); the text must be NFC,
    as our tokenizer makes it. The file is written to ``<path>.partial`` and renamed, so a
    failure never leaves a half-written file at ``path``.

    Args:
        path: the ``.gguf`` file to write; its parent directories are created.
        state_dict: HF ``LlamaForCausalLM`` names to torch tensors or NumPy arrays of the shapes
            ``config`` implies (``[out, in]`` for projections, ``[hidden]`` for norms).
            ``lm_head.weight`` (``[vocab, hidden]``) is optional: without it llama.cpp ties the
            output to ``token_embd``. Values are converted to float32 (bf16 included) first.
        config: the model's hyperparameters.
        tokenizer: the byte-level BPE tokenizer; its vocabulary size must equal
            ``config.vocab_size``.
        dtype: ``"f32"``, or ``"f16"`` for 2-D weights in F16 (norms stay F32, as upstream).
        rope_layout: ``"half"`` (HF rotate-half: Q/K rows are permuted with
            :func:`permute_rotate_half_to_interleaved`) or ``"interleaved"`` (already adjacent
            pairs, written as is).
        bos_id: the bos token id, recorded when given.
        eos_id: the eos token id, recorded when given.
        pad_id: the padding token id, recorded when given.
        extra_metadata: more keys; values str, bool, int (int32, or int64 when it does not fit),
            float (float32) or lists of those.
        extra_tensors: GGUF-named arrays written unchanged (e.g. SeedΔ index/value tensors).
        skip_tensors: HF names deliberately left out (e.g. dense weights those replace).
        rendered_specials: special tokens that belong to the model's visible output format;
            written ``USER_DEFINED`` (llama.cpp prints them by default), every other special
            token ``CONTROL`` (hidden). bos/eos/pad may not be rendered.
        tokenizer_pre: ``tokenizer.ggml.pre``; other than the default only to reproduce files of
            older exporters (``"default"``) in tests.
        add_bos: ``tokenizer.ggml.add_bos_token``: whether llama.cpp prepends bos to text prompts
            (for models trained with bos first and a prompt format without it, so
            ``llama-cli -p TEXT`` gives the training ids).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        GGUFError: an unknown ``dtype`` or ``rope_layout``, a vocabulary size that differs from
            ``config``, a missing, misshapen or unknown tensor, an invalid ``rendered_specials``
            (see :func:`token_types`) or an unsupported metadata value; the message names the
            tensor, key or token at fault.
    """
    import gguf

    if dtype not in {"f32", "f16"}:
        raise GGUFError(f"dtype must be 'f32' or 'f16', got {dtype!r}")
    if rope_layout not in {"half", "interleaved"}:
        raise GGUFError(f"rope_layout must be 'half' or 'interleaved', got {rope_layout!r}")
    if tokenizer.vocab_size != config.vocab_size:
        raise GGUFError(
            f"tokenizer has {tokenizer.vocab_size} tokens but config.vocab_size is {config.vocab_size}"
        )
    skip = set(skip_tensors)
    names = _tensors_to_write(state_dict, config, skip)
    special_ids = (bos_id, eos_id, pad_id)
    token_types(tokenizer, rendered_specials, special_ids)  # validate before writing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    _add_hyperparameters(writer, config, dtype)
    _add_tokenizer(writer, tokenizer, rendered_specials, special_ids, tokenizer_pre, add_bos)
    for key, value in (extra_metadata or {}).items():
        _add_metadata(writer, key, value)
    for name in names:
        writer.add_tensor(
            hf_to_gguf_name(name), _gguf_array(state_dict[name], name, config, dtype, rope_layout)
        )
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, np.ascontiguousarray(array))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    tmp.replace(path)
    return path


def _tensors_to_write(state_dict: Mapping[str, Any], config: LlamaGGUFConfig, skip: set[str]) -> list[str]:
    """The HF names to write, in llama.cpp's order, after checking every shape against ``config``."""
    expected = _expected_shapes(config)
    for name, shape in expected.items():
        if name in skip:
            continue
        if name not in state_dict:
            raise GGUFError(f"state dict is missing tensor {name!r} (expected shape {shape})")
        got = tuple(state_dict[name].shape)
        if got != shape:
            raise GGUFError(f"tensor {name!r} has shape {got}, expected {shape}")
    if "lm_head.weight" in state_dict:
        head_shape = tuple(state_dict["lm_head.weight"].shape)
        if head_shape != (config.vocab_size, config.hidden_size):
            raise GGUFError(f"tensor 'lm_head.weight' has shape {head_shape}")
    unknown = sorted(set(state_dict) - set(expected) - {"lm_head.weight"} - skip)
    if unknown:
        raise GGUFError(f"state dict has tensors llama.cpp's llama architecture cannot use: {unknown[:5]}")
    head = ["lm_head.weight"] if "lm_head.weight" in state_dict else []
    return [name for name in [*expected, *head] if name not in skip]


def _add_hyperparameters(writer: Any, config: LlamaGGUFConfig, dtype: str) -> None:
    import gguf

    writer.add_name(config.name)
    writer.add_context_length(config.context_length)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)


def _add_tokenizer(
    writer: Any,
    tokenizer: BPETokenizer,
    rendered_specials: Collection[str],
    special_ids: tuple[int | None, int | None, int | None],
    tokenizer_pre: str,
    add_bos: bool,
) -> None:
    """The byte-level BPE as llama.cpp's ``gpt2`` tokenizer; ``special_ids``: bos, eos, pad."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tokenizer_pre)
    writer.add_token_list(tokenizer.tokens_in_id_order())
    writer.add_token_types(token_types(tokenizer, rendered_specials, special_ids))
    writer.add_string(NORMALIZER_KEY, "NFC")
    writer.add_token_merges([f"{a} {b}" for a, b in tokenizer.merges()])
    bos_id, eos_id, pad_id = special_ids
    if bos_id is not None:
        writer.add_bos_token_id(bos_id)
    if eos_id is not None:
        writer.add_eos_token_id(eos_id)
    if pad_id is not None:
        writer.add_pad_token_id(pad_id)
    writer.add_add_bos_token(add_bos)


def _gguf_array(value: Any, name: str, config: LlamaGGUFConfig, dtype: str, rope_layout: str) -> np.ndarray:
    """One HF tensor as the array llama.cpp reads: float32, Q/K rows interleaved for RoPE, 2-D in F16."""
    array = _to_numpy(value).astype(np.float32)
    if rope_layout == "half" and name.endswith("self_attn.q_proj.weight"):
        array = permute_rotate_half_to_interleaved(array, config.num_heads)
    elif rope_layout == "half" and name.endswith("self_attn.k_proj.weight"):
        array = permute_rotate_half_to_interleaved(array, config.num_kv_heads)
    if dtype == "f16" and array.ndim == 2:
        array = array.astype(np.float16)
    return array


def token_types(
    tokenizer: BPETokenizer, rendered_specials: Collection[str] = (), hidden_ids: Sequence[int | None] = ()
) -> list[int]:
    """GGUF token types in id order: NORMAL (1), CONTROL (3) or USER_DEFINED (4, rendered).

    Args:
        tokenizer: the tokenizer whose vocabulary is typed.
        rendered_specials: special tokens llama.cpp should print (USER_DEFINED); the other
            special tokens are CONTROL, every ordinary token NORMAL.
        hidden_ids: the bos/eos/pad ids, which must stay CONTROL; ``None`` entries are ignored.

    Returns:
        One ``gguf.TokenType`` value (int) per token id, ``tokenizer.vocab_size`` of them.

    Raises:
        GGUFError: a rendered token is not one of the tokenizer's special tokens, or is the
            bos/eos/pad token, which llama.cpp must keep hidden.
    """
    import gguf

    specials = set(tokenizer.special_tokens)
    rendered = set(rendered_specials)
    unknown = sorted(rendered - specials)
    if unknown:
        raise GGUFError(f"rendered_specials {unknown} are not special tokens of the tokenizer")
    tokens = tokenizer.tokens_in_id_order()
    for token_id in hidden_ids:
        if token_id is not None and tokens[token_id] in rendered:
            raise GGUFError(
                f"rendered_specials: {tokens[token_id]!r} is the bos/eos/pad token and must stay CONTROL"
            )
    types = []
    for token in tokens:
        if token in rendered:
            types.append(int(gguf.TokenType.USER_DEFINED))
        elif token in specials:
            types.append(int(gguf.TokenType.CONTROL))
        else:
            types.append(int(gguf.TokenType.NORMAL))
    return types


def check_text_contract(metadata: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse a GGUF whose tokenizer llama.cpp would run differently from ours.

    Files written before the ``gpt-2`` pre-tokenizer fix say ``tokenizer.ggml.pre = "default"``:
    llama.cpp then splits numbers and punctuation differently, so text prompts do not give the
    model's training ids.

    Args:
        metadata: the file's key/value metadata (:attr:`GGUFContents.metadata`).
        path: the file, named in the message.

    Raises:
        GGUFError: ``tokenizer.ggml.model`` is not ``"gpt2"`` (byte-level BPE), or
            ``tokenizer.ggml.pre`` is not :data:`TOKENIZER_PRE` (the message says to re-export).
    """
    model = metadata.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFError(f"{path}: tokenizer.ggml.model is {model!r}, expected 'gpt2' (byte-level BPE)")
    pre = metadata.get("tokenizer.ggml.pre")
    if pre != TOKENIZER_PRE:
        raise GGUFError(
            f"{path}: tokenizer.ggml.pre is {pre!r}, expected {TOKENIZER_PRE!r}: this file was written by an "
            "older exporter and llama.cpp would tokenize text differently from training; re-export it "
            "from the checkpoint with the current version"
        )


def _add_metadata(writer: Any, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_int32(key, value) if -(2**31) <= value < 2**31 else writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list | tuple):
        writer.add_array(key, list(value))
    else:
        raise GGUFError(f"metadata {key!r}: unsupported value type {type(value).__name__}")


@dataclass
class GGUFContents:
    """What :func:`read_gguf` found in a file.

    Attributes:
        metadata: key -> Python value (str, int, float, bool or list); the reader's own
            ``GGUF.*`` header fields are left out.
        tensors: tensor name -> array in NumPy order (``[out, in]`` for matrices); empty when read
            with ``load_tensors=False``.
        tensor_types: tensor name -> GGML type name (``"F32"``, ``"F16"``, ...).
    """

    metadata: dict[str, Any]
    tensors: dict[str, np.ndarray]
    tensor_types: dict[str, str] = field(default_factory=dict)


def read_gguf(path: str | os.PathLike[str], *, load_tensors: bool = True) -> GGUFContents:
    """Read a GGUF file's metadata and tensors.

    Args:
        path: the ``.gguf`` file.
        load_tensors: False reads only the metadata and the tensor types (no tensor data).

    Returns:
        The file's :class:`GGUFContents`.

    Raises:
        GGUFError: the file is missing, is not a GGUF, is truncated (a tensor ends past the end of
            the file) or has an unreadable metadata value; the message names the file.
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"{path}: file not found")
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # gguf raises ValueError/IndexError/struct errors on bad bytes
        size = path.stat().st_size
        raise GGUFError(
            f"{path}: not a valid GGUF file, or truncated ({size} bytes; {type(exc).__name__}: {exc})"
        ) from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise GGUFError(
                f"{path}: truncated: tensor {tensor.name!r} ends at byte {end} but the file has {size} bytes"
            )
    metadata: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        try:
            metadata[name] = fld.contents()
        except Exception as exc:
            raise GGUFError(f"{path}: metadata key {name!r} is unreadable ({exc})") from None
    tensors: dict[str, np.ndarray] = {}
    types: dict[str, str] = {}
    for tensor in reader.tensors:
        types[tensor.name] = tensor.tensor_type.name
        if load_tensors:
            tensors[tensor.name] = np.array(tensor.data)
    return GGUFContents(metadata=metadata, tensors=tensors, tensor_types=types)


# ---------------------------------------------------------------------------------------------
# llama.cpp checks (need the optional llama-cpp-python)


def llamacpp_available() -> bool:
    """Whether ``llama_cpp`` (llama-cpp-python, the ``llamacpp`` extra) can be imported."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def load_llamacpp(
    path: str | os.PathLike[str], n_ctx: int = 256, *, f32_kv: bool = True, n_threads: int | None = None
) -> Any:
    """Open a GGUF in llama.cpp with all-position logits and (by default) an F32 KV cache.

    Args:
        path: the ``.gguf`` file.
        n_ctx: context length in tokens (also the batch size ``n_batch``).
        f32_kv: keep the KV cache in F32 instead of llama.cpp's F16, for exact comparisons.
        n_threads: CPU threads; default min(4, CPU count). A benchmark passes its own count so
            that llama.cpp and PyTorch are compared on the same cores.

    Returns:
        A ``llama_cpp.Llama`` with ``logits_all=True``.

    Raises:
        GGUFError: llama-cpp-python is not installed, or llama.cpp refuses the file.
    """
    try:
        import llama_cpp
    except ImportError:
        raise GGUFError(
            "llama-cpp-python is not installed; install it with `uv pip install llama-cpp-python`"
        ) from None
    kwargs: dict[str, Any] = {}
    if f32_kv:
        kwargs.update(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    try:
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            n_threads=n_threads or max(1, min(4, os.cpu_count() or 1)),
            verbose=False,
            **kwargs,
        )
    except ValueError as exc:
        raise GGUFError(f"{path}: llama.cpp could not load the model ({exc})") from None


def llamacpp_logits(llm: Any, token_ids: Sequence[int]) -> np.ndarray:
    """Run ``token_ids`` through llama.cpp from an empty context and return every position's logits.

    Args:
        llm: a ``llama_cpp.Llama`` opened with ``logits_all=True`` (:func:`load_llamacpp`).
        token_ids: ``T`` token ids, at most the context length.

    Returns:
        float64 logits ``[T, vocab]``; row ``t`` predicts token ``t + 1``.
    """
    llm.reset()
    llm.eval(list(token_ids))
    return np.array(llm.scores[: len(token_ids)], dtype=np.float64)


def llamacpp_greedy(
    path_or_llm: Any, prompt_ids: Sequence[int], n_tokens: int, stop_ids: Sequence[int] = ()
) -> list[int]:
    """Continue ``prompt_ids`` greedily in llama.cpp (top-k 1, temperature 0, no repeat penalty).

    Args:
        path_or_llm: a ``.gguf`` path (opened with a context of
            ``max(64, len(prompt_ids) + n_tokens + 8)``) or a loaded ``llama_cpp.Llama``.
        prompt_ids: the prompt's token ids.
        n_tokens: the most tokens to generate.
        stop_ids: generation stops after emitting one of these (it is included in the result).

    Returns:
        The generated ids only, at most ``n_tokens``.
    """
    llm = path_or_llm
    if isinstance(path_or_llm, str | os.PathLike):
        llm = load_llamacpp(path_or_llm, n_ctx=max(64, len(prompt_ids) + n_tokens + 8))
    llm.reset()
    out: list[int] = []
    for token in llm.generate(list(prompt_ids), top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        out.append(int(token))
        if token in stop_ids or len(out) >= n_tokens:
            break
    return out


def compare_with_llamacpp(
    path: str | os.PathLike[str],
    reference_logits: Callable[[list[int]], np.ndarray],
    token_ids: Sequence[int],
    n_greedy: int = 16,
    stop_ids: Sequence[int] = (),
) -> dict[str, Any]:
    """Compare llama.cpp with a reference forward on the same tokens.

    Args:
        path: the ``.gguf`` file to load in llama.cpp.
        reference_logits: ``ids -> [len(ids), vocab]`` logits of the same model (e.g. the
            PyTorch one); called once on ``token_ids`` and once per greedy reference step, on
            the whole sequence (no cache).
        token_ids: the tokens both run on (and the prompt of the greedy continuations).
        n_greedy: the most tokens of each greedy continuation.
        stop_ids: tokens that end a greedy continuation (included in it).

    Returns:
        ``max_abs_diff`` (float: largest absolute logit difference over all positions and
        vocabulary entries), ``argmax_agreement`` (float: fraction of positions whose argmax
        agrees), ``greedy_llamacpp`` and ``greedy_reference`` (lists of generated ids) and
        ``greedy_equal`` (bool).

    Raises:
        GGUFError: llama.cpp cannot load the file, or the two logit arrays differ in shape.
    """
    ids = list(token_ids)
    llm = load_llamacpp(path, n_ctx=max(64, len(ids) + n_greedy + 8))
    ours = llamacpp_logits(llm, ids)
    ref = np.asarray(reference_logits(ids), dtype=np.float64)
    if ref.shape != ours.shape:
        raise GGUFError(f"reference logits have shape {ref.shape}, llama.cpp gave {ours.shape}")
    greedy_cpp = llamacpp_greedy(llm, ids, n_greedy, stop_ids)
    greedy_ref: list[int] = []
    seq = list(ids)
    for _ in range(n_greedy):
        nxt = int(np.argmax(np.asarray(reference_logits(seq))[-1]))
        greedy_ref.append(nxt)
        seq.append(nxt)
        if nxt in stop_ids:
            break
    return {
        "max_abs_diff": float(np.max(np.abs(ours - ref))),
        "argmax_agreement": float(np.mean(ours.argmax(-1) == ref.argmax(-1))),
        "greedy_llamacpp": greedy_cpp,
        "greedy_reference": greedy_ref,
        "greedy_equal": greedy_cpp == greedy_ref,
    }
