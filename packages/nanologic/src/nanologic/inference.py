"""Loading a run directory and formalising sentences with it."""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nanologic.configs import DEFAULT_BEAM_SIZE, DEFAULT_CONSTRAINT
from nanologic.data import (
    ATOMS,
    CONNECTORS,
    EOS,
    FORMULA,
    formalization_result,
    normalize_text,
    prompt_text,
)
from nanologic.errors import NanologicError
from nanologic.grammar import (
    BINARY_CONNECTIVES,
    CONNECTIVE_WORDS,
    LETTERS_ONCE_NOTE,
    BeamGrammarMask,
    GrammarCompiler,
    GrammarLogitsProcessor,
    answer_grammar,
    grounded_grammar,
    lexicon_verb_lemma,
    reading_positions,
    sentence_tokens,
    words_and_expressions,
)
from nanologic.logic import (
    NOT,
    Atom,
    Binary,
    Node,
    Not,
    atom_letters,
    atoms,
    connectors_used,
    formula_tokens,
    parse,
    rename,
    to_unicode,
    try_parse,
)
from nanologic.model import NanoLogic, NanoLogicConfig
from nanologic.normalize import (
    FUNCTION_WORDS,
    clause_key,
    normalize_results,
    not_content_words,
    prepare_sentences,
    repeated_atoms,
)
from nanologic.normalize import (
    normalize_definitions as normalize_atom_definitions,
)

if TYPE_CHECKING:
    from lm_shared.tokenization import BPETokenizer

CONSTRAINTS = (None, "format", "grounded", "grounded-unbounded")
# What the repair re-decodes: (prompt, answer, token span to switch in, positions switched, grammar).
_SwitchItem = tuple[list[int], list[int], tuple[int, int], set[int], str | None]
WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer/tokenizer.json"


def save_run_model(model: NanoLogic, run_dir: Path) -> Path:
    """Write ``model_config.json`` and ``model.safetensors`` atomically.

    Raises ``lm_shared.runs.NonFiniteError`` (nothing written) when a weight is NaN/Inf.
    """
    from safetensors.torch import save_file

    from lm_shared.runs import atomic_path, atomic_write_json, check_finite_parameters

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    check_finite_parameters(state.items(), what="the nanologic model")
    atomic_write_json(run_dir / MODEL_CONFIG, model.config.to_dict())
    path = run_dir / WEIGHTS
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[NanoLogic, BPETokenizer]:
    """Model (eval mode) and tokenizer of a run directory, with clear errors when incomplete."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from lm_shared.runs import STATUS_FINISHED, require_run_of
    from lm_shared.tokenization import BPETokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NanologicError(f"run directory {run_dir} does not exist (expected a `nanologic train` output)")
    # another member's run is named as such
    status = require_run_of(run_dir, "nanologic", finished=False).get("status", STATUS_FINISHED)
    for name in (MODEL_CONFIG, WEIGHTS, TOKENIZER):
        if not (run_dir / name).is_file():
            if status != STATUS_FINISHED:  # stopped before its weights were written (Ctrl-C, a crash)
                raise NanologicError(
                    f"{run_dir}: the run is {status}, its weights not written yet; continue it with "
                    f"`nanologic train --out {run_dir} --resume`"
                )
            raise NanologicError(
                f"{run_dir} is not a nanologic run: missing {name} (train one with `nanologic train`)"
            )
    try:
        config = NanoLogicConfig(**json.loads((run_dir / MODEL_CONFIG).read_bytes().decode("utf-8")))
    except (TypeError, ValueError, RecursionError) as exc:
        raise NanologicError(f"{run_dir / MODEL_CONFIG}: incompatible model config ({exc})") from None
    tokenizer = BPETokenizer.load(run_dir / TOKENIZER)
    if tokenizer.vocab_size != config.vocab_size:
        raise NanologicError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model expects {config.vocab_size}"
        )
    model = NanoLogic(config)
    try:
        weights = load_file(str(run_dir / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise NanologicError(
            f"{run_dir / WEIGHTS}: damaged or not a safetensors file ({str(exc)[:120]}); "
            "re-export it or train again"
        ) from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise NanologicError(
            f"{run_dir / WEIGHTS}: weights do not match the config ({str(exc)[:200]})"
        ) from None
    return model.to(device).eval(), tokenizer


class Formalizer:
    """Greedy decoding, plus a repair of outputs that break the format's own rules.

    Atoms are distinct propositions by construction, so an atom list that defines two letters by
    the same clause is wrong whatever the formula. ``repair_tries`` > 0 re-decodes such outputs:
    within the repeated definition, the token where the model was least sure (smallest top-1 /
    top-2 logit margin) is switched to its second choice and greedy decoding resumes from there.
    Under a grammar the repair also takes outputs with a definition made only of other
    definitions' words ("Juana tiene trece" beside "Juana tiene trece años"), whose formula joins a subformula with itself
    (``p ∧ p``), leaves a declared letter out or never ends, the marks of two clauses written as
    one or of a clause missed (then the least sure token of the whole atom list is switched), and
    outputs whose formula's connectives are not the declared connectors or that use a letter three
    times (then the least sure token of the connectors and formula). The switch and the re-decoding stay under the grammar,
    and a repair is kept only when its output is free of these marks (else the first output is).
    Under a grammar an answer whose definitions leave content words of the sentence out
    (:func:`uncovered_words`) is re-decoded once more (:meth:`_cover`), then from where a word
    left out was missed (:meth:`_retarget_batch`), and, in a sentence whose formula names each
    letter once, an answer that declares a clause twice is re-decoded without the repeat
    (:meth:`_drop_repeats_batch`).

    ``beam_size`` > 1 decodes each sentence by beam search (:meth:`NanoLogic.beam_search`, each
    beam under its own fork of the grammar) and keeps the best answer that breaks none of the rules
    above, before the repair; 1 (the default) is greedy decoding of the whole batch.

    ``normalize_definitions`` (default on): the definitions are rewritten into the format's
    indicative with the elided subject written out (:func:`nanologic.normalize.normalize_definitions`);
    the model's own text stays in each result's ``raw``.

    ``constraint``: ``None`` (free greedy decoding), ``"format"`` (the answer grammar of
    :mod:`nanologic.grammar` as a logits mask: outputs always parse, over declared letters) or
    ``"grounded"`` (the default: also atom definitions read from the sentence, its words in their
    order without negations or connectives, and as many atoms as the rule baseline reads clauses,
    see :func:`nanologic.grammar.grounded_grammar`) or ``"grounded-unbounded"`` (the same without
    that count, to measure it).

    ``lone_space_rule`` (default on): under a constraint, the lone-space token only where a section
    may end (:func:`nanologic.grammar.space_only_before_marker`); off, the GBNF alone decides, as in
    llama.cpp.
    """

    def __init__(
        self,
        model: NanoLogic,
        tokenizer,
        max_new_tokens: int = 160,
        repair_tries: int = 2,
        constraint: str | None = DEFAULT_CONSTRAINT,
        normalize_definitions: bool = True,
        beam_size: int = DEFAULT_BEAM_SIZE,
        lone_space_rule: bool = True,
    ) -> None:
        if constraint not in CONSTRAINTS:
            raise NanologicError(f"constraint must be one of {CONSTRAINTS}, got {constraint!r}")
        if beam_size < 1:
            raise NanologicError(f"beam_size must be an integer >= 1, got {beam_size!r}")
        self.beam_size = beam_size
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.repair_tries = repair_tries
        self.constraint = constraint
        self.normalize_definitions = normalize_definitions
        self.lone_space_rule = lone_space_rule
        self._grammar_compiler: GrammarCompiler | None = None  # built on the first constrained batch
        self.eos_id = tokenizer.token_to_id(EOS)
        self.pad_id = tokenizer.token_to_id("<|pad|>")
        self.atoms_id = tokenizer.token_to_id(ATOMS)
        self.connectors_id = tokenizer.token_to_id(CONNECTORS)

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        repair_tries: int = 2,
        constraint: str | None = DEFAULT_CONSTRAINT,
        normalize_definitions: bool = True,
        beam_size: int = DEFAULT_BEAM_SIZE,
    ) -> Formalizer:
        model, tokenizer = load_run(run_dir)
        return cls(
            model,
            tokenizer,
            repair_tries=repair_tries,
            constraint=constraint,
            normalize_definitions=normalize_definitions,
            beam_size=beam_size,
        )

    def _grammars(self, sentences: list[str]) -> list[str] | None:
        """Each sentence's answer grammar (None when unconstrained)."""
        if self.constraint is None:
            return None
        if self.constraint in ("grounded", "grounded-unbounded"):
            bounded, marks = self.constraint == "grounded", self.model.config.polarity_marks
            return [grounded_grammar(s, polarity_marks=marks, rule_bounds=bounded) for s in sentences]
        return [answer_grammar()] * len(sentences)

    def _processor(
        self, grammars: list[str] | None, prompt_len: int, answers: list[list[int]] | None = None
    ) -> GrammarLogitsProcessor | None:
        """The grammar mask for a batch; ``answers``: tokens each row has already written."""
        if grammars is None:
            return None
        return GrammarLogitsProcessor(self._compiler(), grammars, prompt_len, answers)

    def _compiler(self) -> GrammarCompiler:
        if self._grammar_compiler is None:
            self._grammar_compiler = GrammarCompiler(
                self.tokenizer, stop_ids=(self.eos_id,), lone_space_rule=self.lone_space_rule
            )
        return self._grammar_compiler

    def _beam(self, prompt: list[int], grammar: str | None, sentence: str) -> list[int]:
        """The best of ``beam_size`` beam-search answers that keeps the format's rules
        (:meth:`repair_span`), else the best one."""
        mask = None if grammar is None else BeamGrammarMask(self._compiler(), grammar)
        hypotheses = self.model.beam_search(
            prompt, self._room(len(prompt)), self.beam_size, stop_ids=(self.eos_id,), mask=mask
        )
        for answer, _ in hypotheses:
            if self.repair_span(answer, whole_list=grammar is not None, sentence=sentence) is None:
                return answer
        return hypotheses[0][0]

    def _room(self, prompt_len: int) -> int:
        room = self.model.config.max_seq_len - prompt_len
        if room <= 0:
            raise NanologicError(
                f"sentence too long for the model's context ({self.model.config.max_seq_len} tokens)"
            )
        return min(self.max_new_tokens, room)

    def generate_raw(self, sentences: list[str], batch_size: int = 64) -> list[str]:
        """Decode each sentence's answer: greedy (under the grammar with ``constraint``), repaired.

        Args:
            sentences: the sentences, already normalised (:func:`nanologic.data.normalize_text`).
            batch_size: sentences decoded together (left-padded into one int64 [B, T0] batch).

        Returns:
            One decoded text per sentence, in order: the tokens after the prompt up to and
            including ``<|eos|>`` (when reached), with special tokens as the tokenizer decodes them.

        Raises:
            NanologicError: a sentence's prompt does not fit in the model's ``max_seq_len``.
        """
        texts: list[str] = []
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start : start + batch_size]
            prompts = [self.tokenizer.encode(prompt_text(s)) for s in chunk]
            grammars = self._grammars(chunk)
            if self.beam_size > 1:
                outs = [
                    self._beam(prompt, None if grammars is None else grammars[k], chunk[k])
                    for k, prompt in enumerate(prompts)
                ]
            else:
                outs = self.model.generate(
                    prompts,
                    self._room(max(len(p) for p in prompts)),
                    pad_id=self.pad_id,
                    stop_ids=(self.eos_id,),
                    processors=self._processor(grammars, max(len(p) for p in prompts)),
                )
            row_grammars: list[str | None] = list(grammars) if grammars is not None else [None] * len(chunk)
            outs = self._repair_batch(prompts, outs, row_grammars, chunk)
            if grammars is not None and self.repair_tries > 0:
                outs = self._cover_batch(prompts, outs, grammars, chunk)
                rows = list(range(len(outs)))
                for _ in range(self.repair_tries):  # a row unchanged by a round would repeat it
                    tried = self._retarget_batch(
                        [prompts[k] for k in rows],
                        [outs[k] for k in rows],
                        [grammars[k] for k in rows],
                        [chunk[k] for k in rows],
                    )
                    rows_changed = [k for k, out in zip(rows, tried) if out is not outs[k]]
                    for k, out in zip(rows, tried):
                        outs[k] = out
                    rows = rows_changed
                    if not rows:
                        break
                outs = self._drop_repeats_batch(prompts, outs, grammars, chunk)
            texts.extend(self.tokenizer.decode(out) for out in outs)
        return texts

    def _resume_batch(
        self, prompts: list[list[int]], heads: list[list[int]], grammars: list[str]
    ) -> list[list[int]]:
        """Greedy decoding of each answer on from its ``head`` (tokens after the prompt), under its
        grammar, all in one batch: each head with the tokens written after it."""
        longest = max(len(prompt) + len(head) for prompt, head in zip(prompts, heads))
        tails = self.model.generate(
            [prompt + head for prompt, head in zip(prompts, heads)],
            self._room(longest),
            pad_id=self.pad_id,
            stop_ids=(self.eos_id,),
            processors=self._processor(grammars, longest, heads),
        )
        return [head + tail for head, tail in zip(heads, tails)]

    def _drop_repeats_batch(
        self, prompts: list[list[int]], outs: list[list[int]], grammars: list[str], sentences: list[str]
    ) -> list[list[int]]:
        """Re-decode, without its repeats, an answer that declares a clause twice in a sentence
        whose formula names each letter once (``LETTERS_ONCE_NOTE``, :func:`letters_once`).

        The repeat (:meth:`repeated_atom_span`) is no clause of its own there, and the formula the
        model wrote over it named the clause twice once the repeat was given one letter: "Si x = y,
        entonces x = 2" was declared "p: x = y | q: x = 2 | r: x = 2" and written ``(p → q) → r``,
        given ``(p → q) → q``. The atom list without its repeated items (the rest lettered anew in
        order) is the head greedy decoding resumes from under the grammar; the try is kept when it
        keeps the format's rules on the answer as it will be given (:meth:`repair_span`) and names
        no letter twice, else the answer stays as it was (the same object).
        """
        heads: list[list[int]] = []
        owners: list[int] = []
        for k, (out, grammar) in enumerate(zip(outs, grammars)):
            if LETTERS_ONCE_NOTE not in grammar or self.repeated_atom_span(out) is None:
                continue
            start, end = out.index(self.atoms_id) + 1, out.index(self.connectors_id)
            kept: list[str] = []
            for item in self.tokenizer.decode(out[start:end]).split("|"):
                definition = item.partition(":")[2].strip()
                if definition and definition not in kept:
                    kept.append(definition)
            letters = atom_letters(len(kept))
            listed = " | ".join(f"{letter}: {definition}" for letter, definition in zip(letters, kept))
            head = self.tokenizer.encode(f"{ATOMS} {listed} {CONNECTORS}")
            if self._compiler().accepts(grammar, head):  # not where it asks for more atoms
                heads.append(head)
                owners.append(k)
        if not heads:
            return outs
        candidates = self._resume_batch([prompts[k] for k in owners], heads, [grammars[k] for k in owners])
        best = list(outs)
        for k, candidate in zip(owners, candidates):
            if self.repair_span(candidate, True, sentences[k], as_given=True) is not None:
                continue
            given = self._answered_result(candidate, sentences[k])
            if given["valid_formula"] and _most_uses_of_a_letter(parse(given["formula"])) == 1:
                best[k] = candidate
        return best

    def _written_result(self, out: list[int]) -> dict:
        """The answer ``out`` as the model wrote it (:func:`formalization_result`)."""
        return formalization_result(self.tokenizer.decode(out), self.model.config.polarity_marks)

    def _answered_result(self, out: list[int], sentence: str) -> dict:
        """The answer ``out`` as :meth:`formalize` will give it for the (prepared) ``sentence``:
        normalised, with a clause declared twice under one letter
        (:func:`nanologic.normalize.normalize_results`). A chain's clause written once without its
        subject and once with it ("q: es médico", "r: Enrique es médico") is one clause there, not
        a definition made of another's words."""
        # an unnamed letter stays, a mark of :meth:`repair_span`
        return normalize_results(
            [self._written_result(out)], [sentence], self.normalize_definitions, drop_unnamed=False
        )[0]

    def _definitions(self, out: list[int]) -> list[str]:
        return list(self._written_result(out)["atoms"].values())

    def _uncovered(self, sentence: str, out: list[int]) -> int:
        return len(uncovered_words(sentence, self._definitions(out)))

    def _cover(self, prompt: list[int], out: list[int], grammar: str, sentence: str) -> list[int]:
        """Re-decode an answer whose definitions leave content words of the sentence out.

        Two tries, each from ``out``: another atom where the list ended (a clause missed) and the
        least sure token of the atom list (a clause cut short or merged). A try is kept when it
        keeps the format's rules on the answer as it will be given (:meth:`repair_span` with
        ``as_given``: a clause declared twice is one letter there), which include no
        definition made only of other definitions' words (a clause added next to the wrong one:
        "Rosa es mayor de edad" beside "su hermano es mayor de edad"), and leaves fewer content
        words out.
        """
        return self._cover_batch([prompt], [out], [grammar], [sentence])[0]

    def _cover_batch(
        self, prompts: list[list[int]], outs: list[list[int]], grammars: list[str], sentences: list[str]
    ) -> list[list[int]]:
        """:meth:`_cover` of several answers, every try re-decoded in one batch."""
        items: list[_SwitchItem] = []
        owners: list[int] = []
        missing: dict[int, int] = {}
        for k, (prompt, out, grammar, sentence) in enumerate(zip(prompts, outs, grammars, sentences)):
            if self.connectors_id not in out or self.atoms_id not in out:
                continue
            start, end = out.index(self.atoms_id) + 1, out.index(self.connectors_id)
            if end - 1 <= start or (left_out := self._uncovered(sentence, out)) == 0:
                continue
            missing[k] = left_out
            for span in ((end - 1, end), (start, end)):
                items.append((prompt, out, span, set(), grammar))
                owners.append(k)
        best = list(outs)
        for k, candidate in zip(owners, self._switch_batch(items)):
            # A try that declares the chain's clause again to reach the one after it ("q: Celia se
            # lesionó | r: Celia se lesionó | s: Ricardo marca un gol", (p → ¬q) ∧ (r → s)) is kept:
            # the answer gives the repeat one letter. The marks include a definition made only of
            # another's words (a clause added beside the wrong one).
            if self.repair_span(candidate, True, sentences[k], as_given=True) is not None:
                continue
            candidate_missing = self._uncovered(sentences[k], candidate)
            if candidate_missing < missing[k]:
                best[k], missing[k] = candidate, candidate_missing
        return best

    def _retarget_batch(
        self, prompts: list[list[int]], outs: list[list[int]], grammars: list[str], sentences: list[str]
    ) -> list[list[int]]:
        """Re-decode answers that leave content words out from where a word left out was missed.

        The places (:meth:`_retarget_heads`): a verb a definition took more often than the
        sentence says it, the end of a definition the sentence continues with a word left out,
        the first word of a definition made only of other definitions' words or that the answer as
        given merges into an earlier one (one clause in two forms). There the likeliest
        token the grammar allows that begins a form of a word left out is written and greedy
        decoding resumes; two more tries open another atom after the list's last
        (:meth:`_another_atom_head`: "mi prima suspende tritincoguel y cuetrorgra" had ended the
        list before its elided conjunct), every try of the batch in one batch. The try that leaves
        the fewest content words out is kept if it leaves fewer than the answer and adds no mark of
        :meth:`repair_span` (read as given); where the answer had one already, a marked try may
        replace it. Other answers are returned as they were (the same objects).
        """
        heads: list[list[int]] = []
        owners: list[int] = []
        missing: dict[int, int] = {}
        for k, (prompt, out, grammar, sentence) in enumerate(zip(prompts, outs, grammars, sentences)):
            if self.connectors_id not in out or self.atoms_id not in out:
                continue
            left_out = uncovered_words(sentence, self._definitions(out))
            if not left_out:
                continue
            missing[k] = len(left_out)
            for head in self._retarget_heads(prompt, out, grammar, sentence, left_out):
                heads.append(head)
                owners.append(k)
        if not heads:
            return outs
        candidates = self._resume_batch([prompts[k] for k in owners], heads, [grammars[k] for k in owners])
        best = list(outs)
        marked = {
            k: self.repair_span(outs[k], True, sentences[k], as_given=True) is not None for k in missing
        }
        for k, candidate in zip(owners, candidates):
            if not marked[k] and self.repair_span(candidate, True, sentences[k], as_given=True) is not None:
                continue
            candidate_missing = self._uncovered(sentences[k], candidate)
            if candidate_missing < missing[k]:
                best[k], missing[k] = candidate, candidate_missing
        return best

    def _another_atom_head(self, out: list[int], grammar: str) -> list[int] | None:
        """The atom list of ``out`` with one more item opened ("| r:"), the head of a try where
        the list ended before a clause it left out; None where the grammar allows no more atoms."""
        start, end = out.index(self.atoms_id) + 1, out.index(self.connectors_id)
        listed = self.tokenizer.decode(out[start:end]).strip()
        letter = atom_letters(len(self._definitions(out)) + 1)[-1]
        head = self.tokenizer.encode(f"{ATOMS} {listed} | {letter}:")
        return head if self._compiler().accepts(grammar, head) else None

    @torch.no_grad()
    def _retarget_heads(
        self, prompt: list[int], out: list[int], grammar: str, sentence: str, left_out: list[str]
    ) -> list[list[int]]:
        """The heads :meth:`_retarget_batch` resumes from: ``out`` up to a place of its atom list,
        then the likeliest token the grammar allows there that begins, after a space, a form of a
        word of ``left_out`` (the forms :func:`nanologic.grammar.reading_positions` gives, case
        kept), at most one head per place; then another atom opened after the list's last
        (:meth:`_another_atom_head`), as it is and with the likeliest token that begins a word left
        out."""
        start, end = out.index(self.atoms_id) + 1, out.index(self.connectors_id)
        # words of the atom list: a token after a space begins one; decoded whole (a character
        # split across byte tokens decodes only with its neighbours)
        groups: list[list[int]] = []  # [index of its first token, *token ids]
        for j, token in enumerate(out[start:end]):
            if self.tokenizer.decode([token]).startswith(" ") or not groups:
                groups.append([j, token])
            else:
                groups[-1].append(token)
        words = [(group[0], self.tokenizer.decode(group[1:]).strip()) for group in groups]
        wanted = {f for word in left_out for _, forms in reading_positions(word) for f in forms} | set(
            left_out
        )
        said: collections.Counter[str] = collections.Counter()
        for _, forms in reading_positions(sentence):
            said.update({f.lower() for f in forms})
        definitions = self._definitions(out)
        used = collections.Counter(w.lower() for d in definitions for w in d.split())
        positions = []
        last_word = ""
        firsts: list[int] = []  # where each definition's first word is
        for n, (j, text) in enumerate(words):
            word = text.lower()
            if word.endswith(":"):
                firsts.append(-1)
            elif word.isalnum():
                if firsts and firsts[-1] < 0:
                    firsts[-1] = start + j
                if lexicon_verb_lemma(word) and said[word] and used[word] > said[word]:
                    positions.append(start + j)  # a verb taken more often than the sentence says it
                last_word = word
            # a definition's end: "|", a polarity mark, or the space before <|connectors|>
            ends_here = word in ("|", "¬") or (n + 1 == len(words) and not word)
            if ends_here and _says_soon_after(sentence, last_word, {w.lower() for w in wanted}):
                positions.append(start + j)  # a definition cut short
        # a definition made only of other definitions' words (cue words count as no one's)
        for k in redundant_definitions(definitions, skip=not_content_words()):
            if k < len(firsts) and firsts[k] >= 0:
                positions.append(firsts[k])
        # a definition the answer as given merges into an earlier one, the same clause in another
        # form ("p: el suelo se mojan | q: el suelo se moje" for "Llover es condición suficiente
        # para que el suelo se moje", "llover" left out)
        if self.normalize_definitions:
            letters = atom_letters(len(definitions))
            merged = repeated_atoms(
                normalize_atom_definitions(dict(zip(letters, definitions)), sentence), sentence
            )
            for k, letter in enumerate(letters):
                if letter in merged and k < len(firsts) and firsts[k] >= 0:
                    positions.append(firsts[k])
        device = self.model.embed_tokens.weight.device
        heads = []
        if positions:
            logits = self.model(torch.tensor([prompt + out[:end]], device=device))["logits"][0].float()
            mask = self._processor([grammar], start, [out[:start]])
            assert mask is not None
            targets = set(positions)
            for pos in range(start, max(targets) + 1):  # the mask reads the answer one token at a time
                row = mask(torch.tensor([out[:pos]]), logits[len(prompt) + pos - 1 : len(prompt) + pos])[0]
                if pos in targets and (begun := self._likeliest_start(row, wanted, out[pos])) is not None:
                    heads.append(out[:pos] + [begun])
        # another atom after the list's last, written freely and from a word left out ("u:
        # Voatroe" where the model wrote "u: mi prima" again)
        opened = self._another_atom_head(out, grammar)
        if opened is not None:
            heads.append(opened)
            logits = self.model(torch.tensor([prompt + opened], device=device))["logits"][0].float()
            mask = self._processor([grammar], start, [opened[:start]])
            assert mask is not None
            for pos in range(start, len(opened) + 1):
                row = mask(torch.tensor([opened[:pos]]), logits[len(prompt) + pos - 1 : len(prompt) + pos])[0]
            # not for one verb left out, mostly a clause's own verb misread ("Ya sea que el pirata
            # escape …" declared "el pirata ha de la cueva"): a new atom there was a lone verb
            lone_verb = len(left_out) == 1 and lexicon_verb_lemma(left_out[0].lower()) is not None
            if not lone_verb and (begun := self._likeliest_start(row, wanted)) is not None:
                heads.append(opened + [begun])
        return heads

    def _likeliest_start(
        self, row: torch.Tensor, wanted: set[str], other_than: int | None = None
    ) -> int | None:
        """The likeliest token of ``row`` (float [V], masked) that begins, after a space, one of
        the ``wanted`` word forms, other than ``other_than``; None where no allowed token does."""
        for token in row.argsort(descending=True).tolist():
            if not torch.isfinite(row[token]):
                return None
            text = self.tokenizer.decode([token])
            piece = text.strip()
            if (
                token != other_than
                and text.startswith(" ")
                and piece
                and any(f.startswith(piece) for f in wanted)
            ):
                return token
        return None

    def _repair_batch(
        self,
        prompts: list[list[int]],
        outs: list[list[int]],
        grammars: list[str | None],
        sentences: list[str],
    ) -> list[list[int]]:
        """Up to ``repair_tries`` switches of the least sure token of each answer (see the class
        docstring), each round's re-decodings in one batch (a sentence's text only counts under a
        grammar)."""
        firsts, outs = outs, list(outs)
        switched: list[set[int]] = [set() for _ in outs]  # positions switched are not switched back
        active = list(range(len(outs)))
        for _ in range(self.repair_tries):
            repaired: list[int] = []
            items: list[_SwitchItem] = []
            for k in active:
                grammar = grammars[k]
                sentence = sentences[k] if grammar is not None else None
                span = self.repair_span(outs[k], whole_list=grammar is not None, sentence=sentence)
                if span is not None:
                    repaired.append(k)
                    items.append((prompts[k], outs[k], span, switched[k], grammar))
            active = repaired
            if not active:
                break
            for k, out in zip(active, self._switch_batch(items)):
                outs[k] = out
        for k, grammar in enumerate(grammars):
            if grammar is not None and self.repair_span(outs[k], True, sentences[k]) is not None:
                outs[k] = firsts[k]
        return outs

    def repair_span(
        self,
        out: list[int],
        whole_list: bool = False,
        sentence: str | None = None,
        as_given: bool = False,
    ) -> tuple[int, int] | None:
        """Token range [start, end) to repair, or None when the output keeps the format's rules.

        A repeated definition (:meth:`repeated_atom_span`); with ``whole_list`` (decoding under a
        grammar) also the whole atom list when a definition is made only of other definitions'
        words (:func:`has_redundant_definition`), the formula joins a subformula with itself, leaves
        a declared letter out or never ends (under the grammar, an answer that does not parse ran
        into the token limit, mostly one clause-merging atom repeated: ``p ∧ ¬p ∧ p ∧ …``), and the
        connector list and formula when the formula's connectives are not the declared ones (the
        ``verify`` stage's consistency rule) or it uses a letter more than
        ``MAX_USES_OF_A_LETTER`` times; the whole answer when the connectors declare a ¬ or the
        ``sentence`` says "no", "ni", "nunca", "jamás" or "tampoco" and the formula has no ¬.
        With ``as_given`` (and a ``sentence``, the definitions normalised) the marks are read on
        the answer as it will be given (:meth:`_answered_result`), where a clause declared twice is
        one letter, so a repeated definition is no mark of its own. The repair reads them as
        written: read as given, answers whose repeat had hidden a wrong reading were no longer
        repaired (``¬p ∧ ¬q ∧ ¬r`` became ``¬p ∧ ¬q ∧ (¬r ∧ r)``, 4 of a test split's 549).
        """
        span = self.repeated_atom_span(out)
        given_sentence = sentence if as_given and self.normalize_definitions else None
        if (span is not None and given_sentence is None) or not whole_list:
            return span
        if self.atoms_id not in out or self.connectors_id not in out:
            return None
        result = (
            self._written_result(out)
            if given_sentence is None
            else self._answered_result(out, given_sentence)
        )
        node = parse(result["formula"]) if result["valid_formula"] else None
        if (
            node is None
            or _joins_itself(node)
            or set(result["atoms"]) - set(atoms(node))
            or has_redundant_definition(list(result["atoms"].values()))
        ):
            start, end = out.index(self.atoms_id) + 1, out.index(self.connectors_id)
            return (start, end) if end > start else None
        used, declared = set(connectors_used(node)), {symbol for symbol, _ in result["connectors"]}
        negation_said = NOT in declared or (sentence is not None and _NEGATION_RE.search(sentence))
        if negation_said and NOT not in used:  # with polarity marks a ¬ may be in the atom list
            return out.index(self.atoms_id) + 1, len(out) - (out[-1] == self.eos_id)
        if used != declared or _most_uses_of_a_letter(node) > MAX_USES_OF_A_LETTER:
            start = out.index(self.connectors_id) + 1
            end = len(out) - (out[-1] == self.eos_id)
            return (start, end) if end > start else None
        return None

    def repeated_atom_span(self, out: list[int]) -> tuple[int, int] | None:
        """Token range [start, end) of the first atom definition equal to an earlier one."""
        if self.atoms_id not in out or self.connectors_id not in out:
            return None
        first = out.index(self.atoms_id) + 1
        last = out.index(self.connectors_id)
        if last <= first:
            return None
        ends, text = [], ""
        for k in range(first, last):  # character offset where each token ends
            text = self.tokenizer.decode(out[first : k + 1])
            ends.append(len(text))
        seen: set[str] = set()
        offset = 0
        for item in text.split("|"):
            colon = item.find(":")
            definition = item[colon + 1 :].strip() if colon >= 0 else ""
            if definition and definition in seen:
                lo = offset + colon + 1
                hi = offset + len(item)
                start = next(i for i, e in enumerate(ends) if e > lo)
                end = next((i + 1 for i, e in enumerate(ends) if e >= hi), len(ends))
                return first + start, first + end
            seen.add(definition)
            offset += len(item) + 1
        return None

    def _switch_least_sure(
        self,
        prompt: list[int],
        out: list[int],
        span: tuple[int, int],
        switched: set[int],
        grammar: str | None = None,
    ) -> list[int]:
        """``out`` with the least sure token of ``span`` switched (a position not in ``switched``,
        which gets it) and greedy decoding resumed from there, under ``grammar``."""
        return self._switch_batch([(prompt, out, span, switched, grammar)])[0]

    def _switch_batch(self, items: list[_SwitchItem]) -> list[list[int]]:
        """:meth:`_switch_least_sure` of several (prompt, out, span, switched, grammar) items, the
        re-decodings left-padded into one batch."""
        answers: list[list[int]] = []
        resumed: list[int] = []  # items whose head is decoded on
        for k, (prompt, out, span, switched, grammar) in enumerate(items):
            head, finished = self._switched_head(prompt, out, span, switched, grammar)
            answers.append(head)
            if not finished:
                resumed.append(k)
        if not resumed:
            return answers
        prompts = [items[k][0] + answers[k] for k in resumed]
        longest = max(len(p) for p in prompts)
        grammars = [grammar for k in resumed if (grammar := items[k][4]) is not None]
        tails = self.model.generate(
            prompts,
            self._room(longest),
            pad_id=self.pad_id,
            stop_ids=(self.eos_id,),
            # a Formalizer decodes every sentence under a grammar or none
            processors=self._processor(grammars or None, longest, [answers[k] for k in resumed]),
        )
        for k, tail in zip(resumed, tails):
            answers[k] = answers[k] + tail
        return answers

    @torch.no_grad()
    def _switched_head(
        self,
        prompt: list[int],
        out: list[int],
        span: tuple[int, int],
        switched: set[int],
        grammar: str | None,
    ) -> tuple[list[int], bool]:
        """The answer up to and including the switched token, and whether it is already whole
        (the switch wrote ``<|eos|>``, or no other token was allowed: then ``out`` itself)."""
        start, end = span
        device = self.model.embed_tokens.weight.device
        ids = torch.tensor([prompt + out[:end]], device=device)
        logits = self.model(ids)["logits"][0].float()
        # logits at position len(prompt) + j - 1 predict out[j]
        rows = logits[len(prompt) + start - 1 : len(prompt) + end - 1]
        if grammar is not None:  # the choices the grammar allowed at each position of the span
            mask = self._processor([grammar], start, [out[:start]])
            assert mask is not None
            for j in range(end - start):
                rows[j] = mask(torch.tensor([out[: start + j]]), rows[j : j + 1])[0, : rows.size(1)]
        top = rows.topk(2, dim=-1)
        margin = top.values[:, 0] - top.values[:, 1]
        for pos in switched:
            if start <= pos < end:
                margin[pos - start] = float("inf")
        j = int(margin.argmin())
        choice = (
            int(top.indices[j, 1]) if int(top.indices[j, 0]) == out[start + j] else int(top.indices[j, 0])
        )
        switched.add(start + j)
        head = out[: start + j] + [choice]
        if choice == self.eos_id:
            return head, True
        if not torch.isfinite(top.values[j, 1]):
            return out, True
        return head, False

    def formalize(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        """Formalise sentences: atoms, connectors, formula (Unicode) and formula_ascii for each.

        Args:
            sentences: the sentences as written (normalised here).
            batch_size: sentences decoded together (see :meth:`generate_raw`).

        Returns:
            One :func:`nanologic.data.formalization_result` dict per sentence, in order.

        Raises:
            NanologicError: a sentence has no word, or its prompt does not fit in the model's
                ``max_seq_len``.
        """
        prepared = prepare_sentences(sentences)
        texts = self.generate_raw(prepared, batch_size)
        results = [answer_result(text, self.model.config.polarity_marks) for text in texts]
        return normalize_results(results, prepared, self.normalize_definitions)


def answer_result(text: str, polarity_marks: bool) -> dict:
    """:func:`formalization_result` of a decoded answer (any backend); a formula that ran into the
    token limit, or ended after using a letter more than ``MAX_USES_OF_A_LETTER`` times, is cut
    where it first was complete (:func:`first_complete_formula`), with ``formula_cut`` set and the
    model's text kept in ``raw``."""
    # the byte-level tokenizer decodes an answer cut by the token limit inside a character ("∨" is
    # three bytes) to a trailing U+FFFD, which no reader wants to see
    raw, text = text, text.rstrip().rstrip("\ufffd")
    result = formalization_result(text, polarity_marks)
    result["formula_cut"] = False
    if FORMULA not in text:
        return result
    if result["valid_formula"] and _most_uses_of_a_letter(parse(result["formula"])) <= MAX_USES_OF_A_LETTER:
        return result
    # a run-on that ended: "p ∧ ((q → r) → (p → (r → (p → (r ∧ r)))))" for "Dado que A, cuando B,
    # C" is p ∧ (q → r) up to its first complete point (11 of a default run's 438 test answers)
    head, _, tail = text.partition(FORMULA)
    declared = {symbol for symbol, _ in result["connectors"]} & set(BINARY_CONNECTIVES)
    cut = first_complete_formula(tail.split(EOS)[0], set(result["atoms"]), declared)
    if cut is None or _most_uses_of_a_letter(parse(cut)) > MAX_USES_OF_A_LETTER:
        return result
    result = formalization_result(f"{head}{FORMULA} {cut} {EOS}", polarity_marks)
    result.update(raw=raw, formula_cut=True)
    return result


def first_complete_formula(
    text: str, letters: set[str], connectives: AbstractSet[str] = frozenset()
) -> str | None:
    """The shortest prefix of a runaway formula that, its open parentheses closed, parses and uses
    every declared letter and binary connective of ``connectives`` (Unicode, normalised), else
    the shortest that uses every letter, or None when no prefix does. With one letter, "p" alone
    is complete: "Viene o no viene" was written ``p ∨ ¬p ∨ ¬p`` and cut to ``p``, where the
    declared ∨ keeps ``p ∨ ¬p`` (session 54).

    A small model's greedy decoding can loop inside the formula until the token limit
    ("¬(p → q ↔ q → ¬q ↔ …" for "No pasa que si estudias, suspendas"); under the answer grammar
    every prefix is the start of a formula, so the first point where it was a whole formula over
    the sentence's atoms is the model's own reading before the loop (here ``¬(p → q)``).
    """
    tokens = formula_tokens(text)
    complete: list[Node] = []  # the prefixes that use every letter, shortest first
    depth = 0
    for end, (kind, _) in enumerate(tokens, 1):
        depth += {"lpar": 1, "rpar": -1}.get(kind, 0)
        if depth < 0:
            break
        if kind not in ("atom", "rpar"):  # a formula never ends on an operator or "("
            continue
        node = try_parse(" ".join(symbol for _, symbol in tokens[:end]) + ")" * depth)
        if node is not None and set(atoms(node)) >= letters:
            if set(connectors_used(node)) >= set(connectives):
                return to_unicode(node)
            complete.append(node)
    return to_unicode(complete[0]) if complete else None


_SENTENCE_WORD_RE = re.compile(r"\w+|[^\w\s]")


def _says_soon_after(sentence: str, last: str, wanted: set[str], window: int = 3) -> bool:
    """Whether one of ``wanted`` (lower case) is among the ``window`` words after an occurrence of
    ``last`` (a definition's last word, lower case) in ``sentence``, with no punctuation mark or
    connective between ("Si Luis canta, Ana lee novelas": "novelas" does not continue "canta")."""
    tokens = [t.lower() for t in _SENTENCE_WORD_RE.findall(sentence)]
    for k, token in enumerate(tokens):
        if token != last:
            continue
        for following in tokens[k + 1 : k + 1 + window]:
            if not following[:1].isalnum() or following in CONNECTIVE_WORDS:
                break
            if following in wanted:
                return True
    return False


def redundant_definitions(definitions: list[str], skip: frozenset[str] | set[str] | None = None) -> list[int]:
    """Indices of the definitions that hold no word (lower-cased, not in ``skip``: by default
    function words, negations and connectives) that the others lack; an empty definition is
    redundant. An expression of arithmetic is one word (:func:`nanologic.grammar.words_and_expressions`),
    so "x = 2" beside "x = y" is not redundant: its "y" is no conjunction."""
    skip = FUNCTION_WORDS | CONNECTIVE_WORDS if skip is None else skip
    words = [_definition_words(d) - skip for d in definitions]
    return [k for k, mine in enumerate(words) if not mine - set().union(*words[:k], *words[k + 1 :])]


def _definition_words(definition: str) -> set[str]:
    """The lower-cased words of ``definition``, each expression of arithmetic one word."""
    words, expressions = words_and_expressions(definition.split())
    return {word.lower() for word in words} | set(expressions)


def has_redundant_definition(definitions: list[str]) -> bool:
    """Whether some definition is redundant (:func:`redundant_definitions`)."""
    return bool(redundant_definitions(definitions))


def uncovered_words(sentence: str, definitions: Iterable[str]) -> list[str]:
    """Content words of ``sentence`` that no definition holds in any form the grammar allows.

    A word counts as held when one of its forms in :func:`nanologic.grammar.reading_positions`
    (the indicative of a subjunctive, another person of a verb, case) is a word of a definition.
    Function words and the cue inventory's words (``generator.CUES``) never count as left out.
    """
    held = {w.lower() for d in definitions for w in d.split()}
    skip = not_content_words()
    missing = []
    for word in sentence_tokens(sentence):
        if word.lower() in skip:
            continue
        forms = {f.lower() for _, variants in reading_positions(word) for f in variants}
        if not (forms | {word.lower()}) & held:
            missing.append(word)
    return missing


# Every gold formula of a sentence with one of these words has a ¬ (a training split's 18,159,
# dev_real's 81).
_NEGATION_RE = re.compile(r"(?<!\w)(no|ni|nunca|jamás|tampoco)(?!\w)", re.IGNORECASE)


# No gold formula of a training split (22,448) or of data/dev_real.jsonl uses a letter three
# times (3 of dev_real's alternative readings do: an exclusive "o" written out); an undertrained
# model's formula that does has mostly run on ("p ∧ ((¬q ∧ ¬r) → (¬r → (p → ¬r)))").
MAX_USES_OF_A_LETTER = 2


def _most_uses_of_a_letter(node: Node) -> int:
    counts: dict[str, int] = {}
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Atom):
            counts[n.name] = counts.get(n.name, 0) + 1
        elif isinstance(n, Not):
            stack.append(n.child)
        elif isinstance(n, Binary):
            stack += [n.left, n.right]
    return max(counts.values())


def _joins_itself(node: Node) -> bool:
    """Whether a binary connective anywhere in ``node`` has two equal sides (``p ∧ p``)."""
    if isinstance(node, Binary):
        return node.left == node.right or _joins_itself(node.left) or _joins_itself(node.right)
    if isinstance(node, Not):
        return _joins_itself(node.child)
    return False


_CONCLUSION_WORDS = (
    "por lo tanto|por tanto|luego|así que|en consecuencia|por consiguiente|de modo que|entonces"
)
_CONCLUSION_MARKERS = re.compile(rf"^({_CONCLUSION_WORDS})\s*,?\s*", re.IGNORECASE)


_ARGUMENT_SPLIT = re.compile(rf"(?<=[.!?])\s+|;\s+(?=(?:{_CONCLUSION_WORDS})(?!\w))", re.IGNORECASE)


def split_argument(text: str) -> tuple[list[str], str]:
    """Premises and conclusion of 'P1. P2. Por lo tanto, C.' (the last sentence is the conclusion).

    Sentences end at ".", "!" or "?"; a ";" ends one only before a conclusion marker ("Llueve; por
    lo tanto, me mojo"), since elsewhere it joins the clauses of one premise ("Si llueve, me mojo;
    y si me mojo, me resfrío").
    """
    sentences = [s.strip() for s in _ARGUMENT_SPLIT.split(normalize_text(text)) if s.strip()]
    if len(sentences) < 2:
        raise NanologicError("an argument needs at least one premise and a conclusion, separated by '.'")
    conclusion = _CONCLUSION_MARKERS.sub("", sentences[-1])
    conclusion = conclusion[:1].upper() + conclusion[1:]
    return sentences[:-1], conclusion


def formalize_output_row(row: dict, result: dict) -> dict:
    """One line of ``formalize --output``: the input row plus atoms, connectors ("∧: y"), formulas."""
    return {
        **row,
        "atoms": result["atoms"],
        "connectors": [f"{s}: {c}" for s, c in result["connectors"]],
        "formula": result["formula"],
        "formula_ascii": result["formula_ascii"],
    }


def shared_atoms(formalised: list[dict]) -> tuple[list, dict[str, str]]:
    """Rename each sentence's atoms into one vocabulary shared across sentences (by definition)."""
    letter_of: dict[str, str] = {}
    definitions: dict[str, str] = {}
    formulas = []
    pool = iter(atom_letters(64))
    for item in formalised:
        node = parse(item["formula"]) if item["valid_formula"] else None
        if node is None:
            raise NanologicError(f"the model produced an unparsable formula: {item['formula']!r}")
        mapping = {}
        for letter in atoms(node):
            definition = item["atoms"].get(letter, letter)
            key = clause_key(definition)
            if key not in letter_of:
                letter_of[key] = next(pool)
                definitions[letter_of[key]] = definition
            mapping[letter] = letter_of[key]
        # Two-step rename so p->q and q->p do not collide.
        tmp = rename(node, {k: f"{k}_tmp" for k in mapping})
        formulas.append(rename(tmp, {f"{k}_tmp": v for k, v in mapping.items()}))
    return formulas, definitions
