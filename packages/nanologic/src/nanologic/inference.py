"""Loading a run directory and formalising sentences with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from nanologic.data import EOS, NanologicError, normalize_text, parse_output, prompt_text
from nanologic.logic import atom_letters, atoms, parse, rename, to_ascii, to_unicode, try_parse
from nanologic.model import NanoLogic, NanoLogicConfig

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
TOKENIZER = "tokenizer/tokenizer.json"


def save_run_model(model: NanoLogic, run_dir: Path) -> Path:
    from safetensors.torch import save_file

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MODEL_CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    path = run_dir / WEIGHTS
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    return path


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[NanoLogic, object]:
    """Model (eval mode) and tokenizer of a run directory, with clear errors when incomplete."""
    from safetensors.torch import load_file

    from lm_shared.tokenization import BPETokenizer

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NanologicError(f"checkpoint directory {run_dir} does not exist")
    for name in (MODEL_CONFIG, WEIGHTS, TOKENIZER):
        if not (run_dir / name).is_file():
            raise NanologicError(
                f"{run_dir} is not a nanologic run: missing {name} (train one with `nanologic train`)"
            )
    try:
        config = NanoLogicConfig(**json.loads((run_dir / MODEL_CONFIG).read_text()))
    except (TypeError, ValueError) as exc:
        raise NanologicError(f"{run_dir / MODEL_CONFIG}: incompatible model config ({exc})") from None
    tokenizer = BPETokenizer.load(run_dir / TOKENIZER)
    if tokenizer.vocab_size != config.vocab_size:
        raise NanologicError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model expects {config.vocab_size}"
        )
    model = NanoLogic(config)
    try:
        model.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    except RuntimeError as exc:
        raise NanologicError(
            f"{run_dir / WEIGHTS}: weights do not match the config ({str(exc)[:200]})"
        ) from None
    return model.to(device).eval(), tokenizer


class Formalizer:
    def __init__(self, model: NanoLogic, tokenizer, max_new_tokens: int = 160) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.eos_id = tokenizer.token_to_id(EOS)
        self.pad_id = tokenizer.token_to_id("<|pad|>")

    @classmethod
    def from_run(cls, run_dir: str | Path) -> Formalizer:
        return cls(*load_run(run_dir))

    def generate_raw(self, sentences: list[str], batch_size: int = 64) -> list[str]:
        texts = []
        for start in range(0, len(sentences), batch_size):
            chunk = sentences[start : start + batch_size]
            prompts = [self.tokenizer.encode(prompt_text(s)) for s in chunk]
            room = self.model.config.max_seq_len - max(len(p) for p in prompts)
            if room <= 0:
                raise NanologicError(
                    f"sentence too long for the model's context ({self.model.config.max_seq_len} tokens)"
                )
            outs = self.model.generate(
                prompts, min(self.max_new_tokens, room), pad_id=self.pad_id, stop_ids=(self.eos_id,)
            )
            texts += [self.tokenizer.decode(o) for o in outs]
        return texts

    def formalize(self, sentences: list[str], batch_size: int = 64) -> list[dict]:
        """atoms, connectors, formula (Unicode) and formula_ascii for each sentence."""
        results = []
        for text in self.generate_raw([normalize_text(s) for s in sentences], batch_size):
            parsed = parse_output(text)
            node = try_parse(parsed["formula"])
            results.append(
                {
                    "atoms": parsed["atoms"],
                    "connectors": parsed["connectors"],
                    "formula": to_unicode(node) if node is not None else parsed["formula"],
                    "formula_ascii": to_ascii(node) if node is not None else "",
                    "valid_formula": node is not None,
                    "raw": text,
                }
            )
        return results


_CONCLUSION_MARKERS = re.compile(
    r"^(por lo tanto|por tanto|luego|así que|en consecuencia|por consiguiente|de modo que|entonces)\s*,?\s*",
    re.IGNORECASE,
)


def split_argument(text: str) -> tuple[list[str], str]:
    """Premises and conclusion of 'P1. P2. Por lo tanto, C.' (the last sentence is the conclusion)."""
    sentences = [s.strip() for s in re.split(r"(?<=[.;!?])\s+", normalize_text(text)) if s.strip()]
    if len(sentences) < 2:
        raise NanologicError("an argument needs at least one premise and a conclusion, separated by '.'")
    conclusion = _CONCLUSION_MARKERS.sub("", sentences[-1])
    conclusion = conclusion[:1].upper() + conclusion[1:]
    return sentences[:-1], conclusion


def shared_atoms(formalised: list[dict]) -> tuple[list, dict[str, str]]:
    """Rename each sentence's atoms into one vocabulary shared across sentences (by definition)."""
    from nanologic.evaluation import normalize_definition

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
            key = normalize_definition(definition)
            if key not in letter_of:
                letter_of[key] = next(pool)
                definitions[letter_of[key]] = definition
            mapping[letter] = letter_of[key]
        # Two-step rename so p->q and q->p do not collide.
        tmp = rename(node, {k: f"{k}_tmp" for k in mapping})
        formulas.append(rename(tmp, {f"{k}_tmp": v for k, v in mapping.items()}))
    return formulas, definitions
