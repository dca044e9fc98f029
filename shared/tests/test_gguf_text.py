"""The text contract of our GGUF files: llama.cpp tokenizes and renders text as our tokenizer does.

The corpus is hand-picked hard strings (numbers of 1-6 digits, ¿¡, |, ( ), logic symbols,
accents, double spaces, a leading space, an NFD string after NFC) plus a seeded generated set.
"""

from __future__ import annotations

import random
import unicodedata

import pytest

from lm_shared.gguf import (
    TOKENIZER_PRE,
    GGUFError,
    LlamaGGUFConfig,
    check_text_contract,
    read_gguf,
    token_types,
    write_llama_gguf,
)
from lm_shared.tokenization import train_bpe

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|answer|>", "<|done|>"]
RENDERED = ["<|answer|>", "<|done|>"]

HARD_STRINGS = [
    "7",
    "un error 500",
    "cada 27 días",
    "x 1 12 123 1234 12345 123456",
    "¿Llueve? ¡Sí!",
    "¿¡Qué!?",
    "a | b | c",
    " | ",
    "(p ∧ q) → r",
    "¬p ↔ (q ∨ ¬s)",
    "→∧∨¬↔",
    "canción, acción, pingüino, año",
    "dos  espacios   tres",
    " un espacio delante",
    unicodedata.normalize("NFC", unicodedata.normalize("NFD", "canción más ñandú")),
    "<|answer|> p: llueve | q: hace frío <|done|>",
    "it's we're they'll",
    "tab\tand\nnewline",
]


def generated_texts(n: int, seed: int = 0) -> list[str]:
    """Seeded sentences mixing words, numbers and the symbols above."""
    rng = random.Random(seed)
    words = ["si", "llueve", "entonces", "el", "servidor", "responde", "¿", "¡", "día", "años", "ñu"]
    symbols = ["|", "(", ")", "→", "∧", "∨", "¬", "↔", ",", ".", "?", "!"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 12)):
            kind = rng.random()
            if kind < 0.6:
                parts.append(rng.choice(words))
            elif kind < 0.8:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 6))))
            else:
                parts.append(rng.choice(symbols))
        out.append(rng.choice([" ", "  "]).join(parts))
    return out


@pytest.fixture(scope="module")
def tokenizer():
    corpus = generated_texts(400, seed=1) + HARD_STRINGS * 5
    return train_bpe(corpus, vocab_size=500, special_tokens=SPECIALS)


def random_llama_state(vocab_size: int):
    torch = pytest.importorskip("torch")
    gcfg = LlamaGGUFConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        num_heads=2,
        num_kv_heads=2,
        context_length=64,
    )
    gen = torch.Generator().manual_seed(0)
    shapes = {
        "model.embed_tokens.weight": (vocab_size, 32),
        "model.norm.weight": (32,),
        "model.layers.0.self_attn.q_proj.weight": (32, 32),
        "model.layers.0.self_attn.k_proj.weight": (32, 32),
        "model.layers.0.self_attn.v_proj.weight": (32, 32),
        "model.layers.0.self_attn.o_proj.weight": (32, 32),
        "model.layers.0.mlp.gate_proj.weight": (64, 32),
        "model.layers.0.mlp.up_proj.weight": (64, 32),
        "model.layers.0.mlp.down_proj.weight": (32, 64),
        "model.layers.0.input_layernorm.weight": (32,),
        "model.layers.0.post_attention_layernorm.weight": (32,),
    }
    return {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}, gcfg


def write(tmp_path, tokenizer, name="m.gguf", **kwargs):
    state, gcfg = random_llama_state(tokenizer.vocab_size)
    return write_llama_gguf(tmp_path / name, state, gcfg, tokenizer, bos_id=1, eos_id=2, pad_id=0, **kwargs)


def test_metadata_pre_types_and_normalizer(tmp_path, tokenizer):
    md = read_gguf(write(tmp_path, tokenizer, rendered_specials=RENDERED), load_tensors=False).metadata
    assert md["tokenizer.ggml.pre"] == TOKENIZER_PRE == "gpt-2"
    types = md["tokenizer.ggml.token_type"]
    # pad/bos/eos/unk CONTROL (3); the output markers USER_DEFINED (4); the rest NORMAL (1)
    assert types[:6] == [3, 3, 3, 3, 4, 4]
    assert set(types[6:]) == {1}
    assert md["lm_shared.tokenizer.normalizer"] == "NFC"
    check_text_contract(md, "m.gguf")


def test_rendered_specials_are_validated(tmp_path, tokenizer):
    with pytest.raises(GGUFError, match="not special tokens"):
        token_types(tokenizer, ["llueve"])
    with pytest.raises(GGUFError, match="must stay CONTROL"):
        write(tmp_path, tokenizer, rendered_specials=["</s>"])
    assert not (tmp_path / "m.gguf").exists()


def test_old_exporter_file_is_refused_with_advice(tmp_path, tokenizer):
    md = read_gguf(write(tmp_path, tokenizer, tokenizer_pre="default"), load_tensors=False).metadata
    with pytest.raises(GGUFError, match=r"'default'.*re-export"):
        check_text_contract(md, "old.gguf")


def test_truncated_file_gives_one_line_error(tmp_path, tokenizer):
    path = write(tmp_path, tokenizer)
    data = path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 200):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match=f"cut{cut}.gguf") as info:
            read_gguf(bad, load_tensors=False)
        assert "\n" not in str(info.value)


def llamacpp_vocab(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


def agreement(llm, tokenizer, texts) -> tuple[int, list[str]]:
    bad = [t for t in texts if llm.tokenize(t.encode(), add_bos=False, special=True) != tokenizer.encode(t)]
    return len(texts) - len(bad), bad


@pytest.mark.llamacpp
def test_llamacpp_token_ids_equal_ours(tmp_path, tokenizer):
    texts = HARD_STRINGS + generated_texts(300, seed=7)
    new = llamacpp_vocab(write(tmp_path, tokenizer, rendered_specials=RENDERED))
    n_ok, bad = agreement(new, tokenizer, texts)
    assert not bad, bad[:5]
    # The old pre-tokenizer ("default") is what this fixes: numbers and " |" split differently.
    old = llamacpp_vocab(write(tmp_path, tokenizer, name="old.gguf", tokenizer_pre="default"))
    n_old, bad_old = agreement(old, tokenizer, texts)
    assert "un error 500" in bad_old and "a | b | c" in bad_old
    assert n_old < n_ok


@pytest.mark.llamacpp
def test_nfd_text_needs_the_front_end_normalisation(tmp_path, tokenizer):
    llm = llamacpp_vocab(write(tmp_path, tokenizer))
    nfd = unicodedata.normalize("NFD", "canción más")
    # llama.cpp has no normaliser: raw NFD differs; the front-end's NFC makes it agree.
    assert llm.tokenize(nfd.encode(), add_bos=False, special=True) != tokenizer.encode(nfd)
    nfc = unicodedata.normalize("NFC", nfd)
    assert llm.tokenize(nfc.encode(), add_bos=False, special=True) == tokenizer.encode(nfd)


@pytest.mark.llamacpp
def test_detokenize_with_defaults_renders_markers_and_hides_control(tmp_path, tokenizer):
    llm = llamacpp_vocab(write(tmp_path, tokenizer, rendered_specials=RENDERED))
    # A generated answer (no <s>: llama-cpp-python drops a leading space after a leading <s>).
    for text in HARD_STRINGS + generated_texts(50, seed=3):
        ids = [*tokenizer.encode(text), 2, 0]  # text </s> <pad>
        ours = tokenizer.decode(ids, skip_special_tokens=False).replace("</s>", "").replace("<pad>", "")
        assert llm.detokenize(ids).decode("utf-8") == ours == text, text
    ids = tokenizer.encode("<|answer|> p: 500 <|done|>")
    assert llm.detokenize(ids).decode() == "<|answer|> p: 500 <|done|>"
    # Before: every special was CONTROL, and llama.cpp's default rendering dropped the markers.
    old = llamacpp_vocab(write(tmp_path, tokenizer, name="old.gguf"))
    assert old.detokenize(ids).decode() == " p: 500 "
