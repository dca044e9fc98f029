"""Harness B data: the original's deterministic tasks (copy, sum, brackets) in the fork's sample format.

A sample is ``### TASK\\n{task}\\n### INPUT\\n{input}\\n### OUTPUT\\n{answer}\\n``; the prompt is
everything up to and including ``### OUTPUT\\n`` and the answer the rest. copy: 8-32 characters
of ``[a-z0-9 ]``; sum: ``a+b`` with a, b in 0-999; brackets: 6-20 parentheses labelled ``OK``
(balanced) or ``BAD`` (half of them; a flipped parenthesis, a random string, or a count-balanced
string whose prefix goes negative). The same seed always gives the same samples; the validation
split is drawn from its own stream and training skips any sample whose prompt is in it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

TASKS = ("copy", "sum", "brackets")
COPY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


@dataclass(frozen=True)
class Sample:
    task: str
    input: str
    answer: str

    @property
    def prompt(self) -> str:
        return f"### TASK\n{self.task}\n### INPUT\n{self.input}\n### OUTPUT\n"

    @property
    def completion(self) -> str:
        return f"{self.answer}\n"

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def is_balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += 1 if ch == "(" else -1
        if depth < 0:
            return False
    return depth == 0


def _balanced(rng: random.Random, n: int) -> str:
    """A uniformly shuffled balanced string of n (even) parentheses, built by rejection on prefixes."""
    out: list[str] = []
    opened = closed = 0
    half = n // 2
    while len(out) < n:
        can_open = opened < half
        can_close = closed < opened
        if can_open and (not can_close or rng.random() < 0.5):
            out.append("(")
            opened += 1
        else:
            out.append(")")
            closed += 1
    return "".join(out)


def make_sample(task: str, rng: random.Random) -> Sample:
    if task == "copy":
        s = "".join(rng.choice(COPY_ALPHABET) for _ in range(rng.randint(8, 32))).strip()
        while len(s) < 8:  # keep 8-32 visible characters after stripping edge spaces
            s += rng.choice(COPY_ALPHABET[:-1])
        return Sample("copy", s, s)
    if task == "sum":
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        return Sample("sum", f"{a}+{b}", str(a + b))
    if task == "brackets":
        n = rng.randint(6, 20)
        if rng.random() < 0.5:
            n -= n % 2
            return Sample("brackets", _balanced(rng, n), "OK")
        kind = rng.random()
        if kind < 0.4:  # one flipped parenthesis in a balanced string
            chars = list(_balanced(rng, n - n % 2))
            i = rng.randrange(len(chars))
            chars[i] = "(" if chars[i] == ")" else ")"
            s = "".join(chars)
        elif kind < 0.8:
            s = "".join(rng.choice("()") for _ in range(n))
        else:  # a rotation of a balanced string: equal counts, but a prefix may go below zero
            n -= n % 2
            s = _balanced(rng, n)
            k = rng.randrange(1, n)
            s = s[k:] + s[:k]
        if is_balanced(s):
            s = s + "("
        return Sample("brackets", s, "OK" if is_balanced(s) else "BAD")
    raise ValueError(f"unknown task {task!r}")


def sample_stream(seed: int, tasks: tuple[str, ...] = TASKS) -> Iterator[Sample]:
    """An endless deterministic stream cycling through the tasks."""
    rng = random.Random(seed)
    i = 0
    while True:
        yield make_sample(tasks[i % len(tasks)], rng)
        i += 1


def make_split(seed: int, n: int) -> list[Sample]:
    stream = sample_stream(seed)
    return [next(stream) for _ in range(n)]


def validation_set(seed: int, n: int) -> list[Sample]:
    """The held-out split: its own stream (seed offset), deduplicated by prompt."""
    seen: set[str] = set()
    out: list[Sample] = []
    for s in sample_stream(seed + 1_000_003):
        if s.prompt not in seen:
            seen.add(s.prompt)
            out.append(s)
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def task_cycle(mix: dict[str, int]) -> tuple[str, ...]:
    """The order of tasks in one training cycle for integer weights, e.g. copy:2 -> copy twice."""
    unknown = set(mix) - set(TASKS)
    if unknown or any(w < 0 for w in mix.values()) or not any(mix.values()):
        raise ValueError(f"task mix needs non-negative weights over {TASKS}, at least one > 0; got {mix}")
    return tuple(t for t in TASKS for _ in range(mix.get(t, 0)))


def training_stream(seed: int, exclude: set[str], tasks: tuple[str, ...] = TASKS) -> Iterator[Sample]:
    for s in sample_stream(seed, tasks):
        if s.prompt not in exclude:
            yield s
