"""Optional LLM check of (sentence, formula) pairs through any OpenAI-compatible chat API.

The requests go through the ``openai`` SDK's client, whose retry policy we use as is (retries on
connection errors, timeouts, 408/409/429 and 5xx, exponential backoff with jitter from 0.5 s to 8 s,
``Retry-After`` honoured). Ours: a cache (JSONL keyed by model + prompt hash, so a rerun costs
nothing), a requests-per-minute limit (the SDK has none), and a token and cost report. The model
may propose a corrected formula; a correction is accepted only if it parses and uses exactly the
declared atoms, so the LLM cannot silently change the atom vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai

from nanologic.errors import NanologicError
from nanologic.logic import FormulaError, atoms, parse, to_ascii, to_unicode
from nanologic.pipeline import StageReport

SYSTEM_PROMPT = (
    "Eres un verificador de lógica proposicional. Recibes una frase en español, sus átomos y una "
    'fórmula. Responde SOLO con JSON: {"verified": bool, "confidence": número 0-1, '
    '"corrected_formula": fórmula o null, "issues": [texto]}. Usa ¬ ∧ ∨ → ↔ y solo los átomos dados.'
)


@dataclass
class LLMVerifier:
    """A cached, rate-limited client of one model behind an OpenAI-compatible chat API.

    Args:
        base_url: the API's base URL (``https://host/v1``).
        model: the model name.
        api_key: the API key (empty for local servers that need none).
        cache_path: JSONL cache of answers, read at start and appended to.
        max_retries: retries of a failed request (the SDK's policy), so ``max_retries + 1`` attempts.
        requests_per_minute: client-side rate limit (0 = none).
        price_in: USD per 1M prompt tokens, for the cost report.
        price_out: USD per 1M completion tokens.
        timeout_s: seconds per request.

    Raises:
        NanologicError: no ``base_url`` or ``model``.
    """

    base_url: str
    model: str
    api_key: str = ""
    cache_path: Path | None = None
    max_retries: int = 4
    requests_per_minute: float = 60.0
    price_in: float = 0.0  # USD per 1M prompt tokens
    price_out: float = 0.0  # USD per 1M completion tokens
    timeout_s: float = 60.0
    usage: dict = field(
        default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cache_hits": 0}
    )

    def __post_init__(self) -> None:
        if not self.base_url or not self.model:
            raise NanologicError(
                "LLM verification needs --base-url and --model (or NANOLOGIC_API_BASE / NANOLOGIC_MODEL)"
            )
        self._cache: dict[str, dict] = {}
        if self.cache_path is not None and Path(self.cache_path).exists():
            for line in Path(self.cache_path).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._cache[entry["key"]] = entry["response"]
        self._last_request = 0.0
        self._client = openai.OpenAI(
            base_url=self.base_url.rstrip("/"),
            # The SDK requires a key; a local server without auth ignores this placeholder.
            api_key=self.api_key or "no-key",
            max_retries=self.max_retries,
            timeout=self.timeout_s,
        )

    @property
    def cost_usd(self) -> float:
        """The cost so far in USD, from the token counts and the prices."""
        return (
            self.usage["prompt_tokens"] * self.price_in + self.usage["completion_tokens"] * self.price_out
        ) / 1e6

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.model}\n{prompt}".encode()).hexdigest()

    def _wait_for_rate_limit(self) -> None:
        if self.requests_per_minute <= 0:
            return
        gap = 60.0 / self.requests_per_minute - (time.monotonic() - self._last_request)
        if gap > 0:
            time.sleep(gap)

    def ask(self, prompt: str) -> dict:
        """The model's JSON answer to ``prompt`` (from the cache when asked before).

        Raises:
            NanologicError: the API refused the request (4xx other than 408/409/429), or every
                attempt failed (the last error named).
        """
        key = self._key(prompt)
        if key in self._cache:
            self.usage["cache_hits"] += 1
            return self._cache[key]
        self._wait_for_rate_limit()
        self._last_request = time.monotonic()
        attempts = self.max_retries + 1
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                temperature=0.1,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            )
        except (openai.RateLimitError, openai.InternalServerError) as exc:
            raise NanologicError(
                f"LLM API failed after {attempts} attempts (HTTP {exc.status_code})"
            ) from None
        except openai.APIStatusError as exc:
            if exc.status_code in (408, 409):
                raise NanologicError(
                    f"LLM API failed after {attempts} attempts (HTTP {exc.status_code})"
                ) from None
            raise NanologicError(f"LLM API error {exc.status_code}: {str(exc.message)[:200]}") from None
        except openai.APIConnectionError as exc:  # timeouts included
            raise NanologicError(
                f"LLM API failed after {attempts} attempts ({type(exc).__name__}: {exc})"
            ) from None
        if response.usage is not None:
            self.usage["prompt_tokens"] += int(response.usage.prompt_tokens or 0)
            self.usage["completion_tokens"] += int(response.usage.completion_tokens or 0)
        self.usage["requests"] += 1
        answer = _parse_answer(response.choices[0].message.content or "")
        self._store(key, answer)
        return answer

    def _store(self, key: str, answer: dict) -> None:
        self._cache[key] = answer
        if self.cache_path is not None:
            Path(self.cache_path).parent.mkdir(parents=True, exist_ok=True)
            with Path(self.cache_path).open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"key": key, "response": answer}, ensure_ascii=False) + "\n")


def _parse_answer(content: str) -> dict:
    text = content.strip()
    if text.startswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return {
            "verified": False,
            "confidence": 0.0,
            "corrected_formula": None,
            "issues": ["unparsable reply"],
            "api_error": True,
        }
    return (
        answer
        if isinstance(answer, dict)
        else {"verified": False, "issues": ["reply is not an object"], "api_error": True}
    )


def build_prompt(ex: dict) -> str:
    atoms_text = "; ".join(f"{a['atom']}: {a['definition']}" for a in ex["thought"]["identified_atoms"])
    return f"Frase: {ex['natural_language_input']}\nÁtomos: {atoms_text}\nFórmula: {ex['output']['formula']}"


def verify_with_llm(examples: list[dict], verifier: LLMVerifier) -> tuple[list[dict], StageReport]:
    report = StageReport("verify (LLM)", n_in=len(examples))
    kept = []
    corrected = 0
    for ex in examples:
        answer = verifier.ask(build_prompt(ex))
        declared = {a["atom"] for a in ex["thought"]["identified_atoms"]}
        verification = {
            "verified": bool(answer.get("verified")),
            "confidence": answer.get("confidence"),
            "corrected": False,
            "issues": answer.get("issues", []),
            "api_error": bool(answer.get("api_error", False)),
        }
        new_formula = answer.get("corrected_formula")
        if not verification["verified"] and isinstance(new_formula, str) and new_formula.strip():
            try:
                node = parse(new_formula)
            except FormulaError:
                report.rejected["rejected: correction does not parse"] += 1
                continue
            if set(atoms(node)) != declared:
                report.rejected["rejected: correction changes the atoms"] += 1
                continue
            ex = {**ex, "output": {"formula": to_unicode(node), "formula_ascii": to_ascii(node)}}
            verification["corrected"] = True
            corrected += 1
        elif not verification["verified"]:
            report.rejected["rejected by the LLM"] += 1
            continue
        kept.append({**ex, "verification": verification})
    report.n_out = len(kept)
    report.notes.update(
        corrected=corrected,
        usage=dict(verifier.usage),
        cost_usd=round(verifier.cost_usd, 6),
    )
    return kept, report
