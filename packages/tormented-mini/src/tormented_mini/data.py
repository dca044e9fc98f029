"""Corpora, the tokenizer, sequence packing and dynamic MLM masking.

Text comes from a file, a folder of ``.txt`` files, a Hugging Face dataset, or the embedded default
(a generated Spanish corpus with gender/number agreement, so masked-token accuracy measures
something a model can learn offline). Masking is dynamic (re-drawn every batch), uses the
tokenizer's real special-token ids, and never masks a special token.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken
from tokenizers.processors import TemplateProcessing

from lm_shared.data import contiguous_split
from lm_shared.tokenization import BPETokenizer, train_bpe
from tormented_mini.errors import DataError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in this order


# ==================================================================================== corpora
_MASC = [
    "gato",
    "perro",
    "niño",
    "libro",
    "caballo",
    "molino",
    "caballero",
    "escudero",
    "camino",
    "pueblo",
    "maestro",
    "vecino",
    "barbero",
    "cura",
    "huerto",
]
_FEM = [
    "casa",
    "niña",
    "mesa",
    "ventana",
    "señora",
    "luna",
    "montaña",
    "plaza",
    "carta",
    "puerta",
    "reina",
    "sombra",
    "iglesia",
    "sobrina",
    "venta",
]
_IRREGULAR_PLURAL = {"pan": "panes", "ciudad": "ciudades", "árbol": "árboles", "señor": "señores"}
_MASC += ["pan", "árbol", "señor"]
_FEM += ["ciudad"]
_ADJ = [
    "viejo",
    "nuevo",
    "pequeño",
    "blanco",
    "negro",
    "hermoso",
    "tranquilo",
    "alto",
    "largo",
    "oscuro",
    "cansado",
    "honrado",
]
_ADJ_INVARIANT = {
    "grande": "grandes",
    "verde": "verdes",
    "feliz": "felices",
    "pobre": "pobres",
    "triste": "tristes",
}
_TRANSITIVE = [
    ("mira", "miran"),
    ("busca", "buscan"),
    ("encuentra", "encuentran"),
    ("lleva", "llevan"),
    ("abre", "abren"),
    ("cierra", "cierran"),
    ("cuida", "cuidan"),
    ("sigue", "siguen"),
    ("vende", "venden"),
    ("recuerda", "recuerdan"),
]
_INTRANSITIVE = [
    ("duerme", "duermen"),
    ("canta", "cantan"),
    ("camina", "caminan"),
    ("descansa", "descansan"),
    ("espera", "esperan"),
    ("llora", "lloran"),
    ("ríe", "ríen"),
]
_PLACES = [
    "en la plaza",
    "junto al río",
    "cerca de la iglesia",
    "por el camino",
    "bajo el árbol",
    "en la venta",
    "detrás del molino",
    "en la casa",
]
_TIMES = ["por la mañana", "cada tarde", "al anochecer", "en invierno", "todos los días", "de noche"]
_NAMES = [("Sancho", "m"), ("Teresa", "f"), ("Pedro", "m"), ("Lucía", "f"), ("Alonso", "m"), ("Dorotea", "f")]


def _plural(noun: str) -> str:
    return _IRREGULAR_PLURAL.get(noun, noun + "s")


def _noun_phrase(rng: random.Random, definite: bool | None = None) -> tuple[str, bool]:
    """A determiner + noun + adjective that agree in gender and number; returns (text, plural)."""
    fem = rng.random() < 0.5
    noun = rng.choice(_FEM if fem else _MASC)
    plural = rng.random() < 0.35
    definite = rng.random() < 0.6 if definite is None else definite
    if definite:
        det = ("las" if fem else "los") if plural else ("la" if fem else "el")
    else:
        det = ("unas" if fem else "unos") if plural else ("una" if fem else "un")
    words = [det, _plural(noun) if plural else noun]
    if rng.random() < 0.7:
        if rng.random() < 0.7:
            adj = rng.choice(_ADJ)
            adj = adj[:-1] + ("a" if fem else "o") + ("s" if plural else "")
        else:
            singular = rng.choice(list(_ADJ_INVARIANT))
            adj = _ADJ_INVARIANT[singular] if plural else singular
        words.append(adj)
    return " ".join(words), plural


def _sentence(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        name, _ = rng.choice(_NAMES)
        obj, _ = _noun_phrase(rng)
        verb = rng.choice(_TRANSITIVE)[0]
        text = f"{name} {verb} {obj} {rng.choice(_PLACES)}"
    elif kind < 0.55:
        subj, plural = _noun_phrase(rng, definite=True)
        obj, _ = _noun_phrase(rng)
        verb = rng.choice(_TRANSITIVE)[int(plural)]
        text = f"{subj} {verb} {obj}"
        if rng.random() < 0.5:
            text += " " + rng.choice(_PLACES)
    elif kind < 0.85:
        subj, plural = _noun_phrase(rng, definite=True)
        verb = rng.choice(_INTRANSITIVE)[int(plural)]
        text = f"{subj} {verb} {rng.choice(_PLACES)} {rng.choice(_TIMES)}"
    else:
        subj, plural = _noun_phrase(rng, definite=True)
        verb = rng.choice(_INTRANSITIVE)[int(plural)]
        text = f"{rng.choice(_TIMES)}, {subj} {verb}"
    return text[0].upper() + text[1:] + "."


def default_corpus(n_paragraphs: int = 1500, seed: int = 1605) -> list[str]:
    """The embedded corpus: paragraphs of 2-6 generated Spanish sentences (fixed seed: a fixed text)."""
    rng = random.Random(seed)
    return [" ".join(_sentence(rng) for _ in range(rng.randint(2, 6))) for _ in range(n_paragraphs)]


def _read_text_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # utf-8-sig drops a BOM (Don Quijote ships one)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    # Paragraphs are blank-line separated; single newlines inside a paragraph are line wraps.
    paragraphs = [" ".join(block.split()) for block in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in paragraphs if p]


def load_texts(path: str | Path) -> list[str]:
    """Paragraphs of a UTF-8 text file, or of every ``*.txt`` under a folder (sorted, recursive)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected a UTF-8 .txt file or a folder of them)")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no .txt files")
    else:
        files = [path]
    paragraphs = [p for f in files for p in _read_text_file(f)]
    if not paragraphs:
        raise DataError(f"{path}: the corpus is empty (no non-blank text)")
    return paragraphs


def load_hf_texts(
    name: str,
    split: str = "train",
    text_field: str = "text",
    max_docs: int = 20_000,
    config: str | None = None,
) -> list[str]:
    """Documents from a Hugging Face dataset (the original used ``erickfmm/red_pajama_es_hq_35``).

    Streams, so only ``max_docs`` documents are downloaded. Offline, the datasets cache is used.
    """
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise DataError("the `datasets` package is needed for --hf-dataset") from exc
    try:
        stream = datasets.load_dataset(name, config, split=split, streaming=True)
        texts: list[str] = []
        for row in stream:
            if text_field not in row:
                raise DataError(f"dataset {name!r} has no field {text_field!r}; fields: {sorted(row)}")
            value = row[text_field]
            if isinstance(value, str) and value.strip():
                texts.append(" ".join(value.split()))
            if len(texts) >= max_docs:
                break
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"could not load Hugging Face dataset {name!r} (split {split!r}): {exc}. Offline, pass a local "
            "text file or folder with --data, or pre-download the dataset into the datasets cache"
        ) from None
    if not texts:
        raise DataError(f"dataset {name!r} split {split!r} gave no non-empty {text_field!r} text")
    return texts


# ==================================================================================== tokenizer
def build_tokenizer(texts: Sequence[str], vocab_size: int) -> BPETokenizer:
    """Byte-level BPE with BERT specials; ``[CLS] A [SEP]`` templates and a left-stripping ``[MASK]``.

    ``[MASK]`` swallows the space before it (as RoBERTa's does), so "la [MASK] vieja" masks the word
    token "Ġcasa" exactly as training masks it.
    """
    if not any(t.strip() for t in texts):
        raise DataError("the corpus is empty: cannot train a tokenizer")
    tokenizer = train_bpe(texts, vocab_size, SPECIAL_TOKENS)
    hf = tokenizer.hf
    hf.add_special_tokens([AddedToken(MASK, lstrip=True, special=True, normalized=False)])
    cls_id, sep_id = hf.token_to_id(CLS), hf.token_to_id(SEP)
    hf.post_processor = TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    return tokenizer


def to_transformers_tokenizer(tokenizer: BPETokenizer, max_length: int):  # noqa: ANN201 - PreTrainedTokenizerFast
    """A ``PreTrainedTokenizerFast`` that ``AutoTokenizer`` and ``pipeline("fill-mask")`` load."""
    return tokenizer.to_transformers(
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=AddedToken(MASK, lstrip=True, special=True, normalized=False),
        model_max_length=max_length,
    )


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    cls: int
    sep: int
    mask: int
    unk: int

    @classmethod
    def from_tokenizer(cls, tokenizer: BPETokenizer) -> SpecialIds:
        ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise DataError(f"tokenizer lacks the special tokens {missing}")
        found = {tok: i for tok, i in ids.items() if i is not None}
        return cls(pad=found[PAD], cls=found[CLS], sep=found[SEP], mask=found[MASK], unk=found[UNK])

    def all(self) -> list[int]:
        return [self.pad, self.cls, self.sep, self.mask, self.unk]


# ==================================================================================== packing
def pack_sequences(docs_ids: Sequence[Sequence[int]], seq_len: int, ids: SpecialIds) -> torch.Tensor:
    """Greedily pack documents into ``[CLS] d1 [SEP] d2 [SEP] ... [PAD]*`` rows of ``seq_len``.

    A document longer than a row is cut into row-sized pieces; rows end in padding, so the padding
    mask matters in training too.
    """
    if seq_len < 4:
        raise DataError(f"seq_len must be >= 4, got {seq_len}")
    body = seq_len - 1  # room after [CLS]
    rows: list[list[int]] = []
    current: list[int] = [ids.cls]

    def flush() -> None:
        nonlocal current
        if len(current) > 1:
            rows.append(current + [ids.pad] * (seq_len - len(current)))
        current = [ids.cls]

    for doc in docs_ids:
        for start in range(0, len(doc), body - 1):
            piece = list(doc[start : start + body - 1]) + [ids.sep]
            if len(current) + len(piece) > seq_len:
                flush()
            current.extend(piece)
    flush()
    if not rows:
        raise DataError("the corpus produced no training sequences (is it empty?)")
    return torch.tensor(rows, dtype=torch.long)


@dataclass
class EncodedCorpus:
    train: torch.Tensor  # [N_train, seq_len] packed rows
    val: torch.Tensor  # [N_val, seq_len]
    ids: SpecialIds


def encode_corpus(
    texts: Sequence[str], tokenizer: BPETokenizer, seq_len: int, val_fraction: float = 0.1
) -> EncodedCorpus:
    """Split documents contiguously (train first, held-out last), then tokenise and pack each side."""
    if not texts:
        raise DataError("the corpus is empty")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ids = SpecialIds.from_tokenizer(tokenizer)
    train_texts, val_texts = contiguous_split(list(texts), (1.0 - val_fraction, val_fraction))
    if not val_texts or not train_texts:
        raise DataError(f"the corpus has {len(texts)} documents; need at least 2 for a train/held-out split")
    encode = lambda docs: tokenizer.encode_batch(docs)  # noqa: E731
    return EncodedCorpus(
        train=pack_sequences(encode(train_texts), seq_len, ids),
        val=pack_sequences(encode(val_texts), seq_len, ids),
        ids=ids,
    )


# ==================================================================================== masking
def mask_tokens(
    input_ids: torch.Tensor,
    ids: SpecialIds,
    vocab_size: int,
    mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT dynamic masking: pick ``mask_prob`` of the non-special tokens; of the picked, 80 % become
    ``[MASK]``, 10 % a random non-special token and 10 % stay unchanged.

    This is the masking of ``transformers.DataCollatorForLanguageModeling`` (``mlm=True``, its
    ``torch_mask_tokens``), kept as our own function on purpose. Read against transformers 5.22.1,
    ``transformers/data/data_collator.py`` (lines 798-858), and measured side by side with the member's
    own tokenizer in ``tests/test_data.py::test_mask_tokens_against_transformers_collator``:

    - Same rates, same first draws. The collator picks with ``torch.bernoulli(p)`` (line 827), which
      on CPU (torch 2.15) gives the same positions as our ``torch.rand(...) < p`` from the same state;
      its second draw, ``bernoulli(0.8)`` for ``[MASK]`` (line 835), matches our single 80/10/10 roll.
      So with one seeded generator both pick the same tokens and put ``[MASK]`` in the same places
      whenever every row got a pick; they part at the random replacements (its third draw is a
      separate ``bernoulli(0.5)``, line 851, and its ``randint`` range differs, see below).
    - At least one picked token per row (ours only). The collator's Bernoulli draw can pick nothing in
      a row, and such a row contributes no loss; on a short row of two real tokens that happens
      ``0.85 ** 2`` = 72 % of the time. Ours picks one random eligible token in any such row (an extra
      ``torch.rand`` draw, taken only when some row is empty), so a short batch never has a row, or
      with a small batch a whole step, without a masked-LM target.
    - Random replacements never special (ours only). The collator draws them from the whole
      vocabulary, ``torch.randint(len(self.tokenizer), ...)`` (line 855), so ``[PAD]``, ``[CLS]``,
      ``[SEP]``, ``[UNK]`` and ``[MASK]`` itself can be written into the input (5 ids in 400 with the
      test tokenizer); ours draws from ``[max(ids.all()) + 1, vocab_size)``, which assumes, as
      :func:`build_tokenizer` guarantees, that the special tokens hold the first ids.
    - Explicit generator (ours). The collator's ``seed`` builds one ``torch.Generator`` on its first
      call and keeps it (``create_rng``, lines 744-765; ``seed + worker id`` in DataLoader workers), and
      without ``seed`` it uses torch's global RNG; there is no per-call generator argument. Ours takes
      the generator per call, so the training loop seeds it with ``(seed, step)``: step ``k``'s mask
      depends on ``k`` alone, which makes a resumed run and every DDP rank see exactly the batches of
      the uninterrupted one-process run.
    - Which tokens are special. The collator asks the tokenizer, row by row in Python
      (``get_special_tokens_mask(..., already_has_special_tokens=True)``, membership in
      ``all_special_ids``) unless the batch carries a ``special_tokens_mask``; ours compares with the
      five ids of ``ids`` in one vectorised pass. For this tokenizer the two sets are equal, and padding
      is excluded in both only because ``[PAD]`` is one of them.
    - No side effects (ours). ``torch_mask_tokens`` writes ``[MASK]`` into the tensor it is given
      (``labels = inputs.clone()`` at line 806, then ``inputs[...] = ...``); ours returns new tensors
      and leaves ``input_ids`` untouched. The collator also pads lists of unequal length, which packed
      rows never need, and offers whole-word masking, which this member does not use.

    Swapping in the collator would therefore change every training batch (the random tokens from the
    first step on, and the RNG stream after any empty row), so the member's default run would no
    longer reproduce its recorded numbers.

    Args:
        input_ids: ``[batch, seq_len]`` int64 token ids, special tokens (``[CLS]``, ``[SEP]``,
            ``[PAD]``) included, as :func:`pack_sequences` makes them.
        ids: the tokenizer's special-token ids; those tokens are never picked nor drawn as replacements.
        vocab_size: number of token ids; random replacements are drawn from
            ``[max(ids.all()) + 1, vocab_size)``.
        mask_prob: the probability of picking each non-special token, in ``(0, 1]``.
        generator: the random source; ``None`` uses torch's global RNG. The same generator state gives
            the same masks.

    Returns:
        ``(inputs, labels)``, both ``[batch, seq_len]`` int64: ``inputs`` with the picked tokens
        replaced (80/10/10), and ``labels`` holding the original id at picked positions and -100
        everywhere else (the ``ignore_index`` of the cross-entropy loss).

    Raises:
        DataError: ``input_ids`` is not 2-D, ``mask_prob`` is outside ``(0, 1]``, or ``vocab_size``
            leaves no non-special id to draw replacements from.
    """
    if input_ids.dim() != 2:
        raise DataError(f"mask_tokens expects [batch, seq_len] ids, got shape {tuple(input_ids.shape)}")
    if not 0.0 < mask_prob <= 1.0:
        raise DataError(f"mask_prob must be in (0, 1], got {mask_prob}")
    if vocab_size <= max(ids.all()) + 1:
        raise DataError(f"vocab_size {vocab_size} leaves no non-special id after the special ids {ids.all()}")
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for special_id in ids.all():
        special |= input_ids == special_id
    probs = torch.full(input_ids.shape, mask_prob)
    picked = (torch.rand(input_ids.shape, generator=generator) < probs) & ~special
    # Rows where the draw picked nothing get one random eligible token.
    empty = ~picked.any(-1) & (~special).any(-1)
    if empty.any():
        noise = torch.rand(input_ids.shape, generator=generator).masked_fill(special, -1.0)
        picked[empty, noise[empty].argmax(-1)] = True
    labels = input_ids.masked_fill(~picked, -100)
    inputs = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = picked & (roll < 0.8)
    to_random = picked & (roll >= 0.8) & (roll < 0.9)
    inputs[to_mask] = ids.mask
    n_special = max(ids.all()) + 1  # specials occupy the first ids
    random_ids = torch.randint(n_special, vocab_size, input_ids.shape, generator=generator)
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def batch_for_step(rows: torch.Tensor, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """The rows of training step ``step``: shuffled epochs whose order depends only on (seed, epoch),
    so a resumed run sees exactly the batches the uninterrupted run would have seen."""
    n = rows.shape[0]
    per_epoch = max(1, n // batch_size)
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return rows[order[index * batch_size : index * batch_size + batch_size]]
