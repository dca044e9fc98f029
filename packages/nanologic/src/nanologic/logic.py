"""Propositional logic: AST, recursive-descent parser, formatting, truth tables, equivalence.

Grammar (precedence from loosest to tightest, as in the original's ``clean.py``)::

    formula       := biconditional
    biconditional := implication ("↔" implication)*        left-associative
    implication   := disjunction ("→" implication)?        right-associative
    disjunction   := conjunction ("∨" conjunction)*        left-associative
    conjunction   := unary ("∧" unary)*                    left-associative
    unary         := "¬" unary | primary
    primary       := atom | "(" formula ")"
    atom          := [a-z][0-9]*

ASCII spellings are accepted on input (``~ ! & | -> => <-> <=>``) and written by
:func:`to_ascii` as ``~ & | -> <->``.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from lm_shared.errors import UserError

NOT, AND, OR, IMPLIES, IFF = "¬", "∧", "∨", "→", "↔"
BINARY_OPS = (AND, OR, IMPLIES, IFF)
CONNECTORS = (NOT, AND, OR, IMPLIES, IFF)
ASCII = {NOT: "~", AND: "&", OR: "|", IMPLIES: "->", IFF: "<->"}
_PRECEDENCE = {IFF: 1, IMPLIES: 2, OR: 3, AND: 4}
_MAX_TRUTH_TABLE_ATOMS = 16


class FormulaError(UserError, ValueError):
    """A formula that cannot be parsed; ``position`` is the 0-based character offset."""

    def __init__(self, message: str, text: str, position: int) -> None:
        self.text = text
        self.position = position
        self.reason = message
        super().__init__(f"{message} at position {position}: {text!r}\n  {' ' * (position + 1)}^")


@dataclass(frozen=True)
class Atom:
    name: str


@dataclass(frozen=True)
class Not:
    child: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Atom | Not | Binary


# ---------------------------------------------------------------------------------------------
# Lexer and parser
# ---------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(?P<iff>↔|<->|<=>)|(?P<imp>→|->|=>)|(?P<and>∧|&)|(?P<or>∨|\|)|(?P<not>¬|~|!)"
    r"|(?P<lpar>\()|(?P<rpar>\))|(?P<atom>[a-z][0-9]*))"
)
_KIND_TO_OP = {"iff": IFF, "imp": IMPLIES, "and": AND, "or": OR, "not": NOT}


def _lex(text: str) -> Iterator[tuple[str, str, int]]:
    """(kind, symbol, offset) of each token; raises :class:`FormulaError` at a character that
    starts no token."""
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            bad = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
            raise FormulaError(f"unexpected character {text[bad]!r}", text, bad)
        kind = match.lastgroup or ""
        yield kind, match.group(kind), match.start(kind)
        pos = match.end()


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    return [*_lex(text), ("end", "", len(text))]


def formula_tokens(text: str) -> list[tuple[str, str]]:
    """The tokens of ``text`` as ``(kind, symbol)`` pairs, up to the first character that starts
    no token; kinds are ``atom``, ``not``, ``and``, ``or``, ``imp``, ``iff``, ``lpar`` and ``rpar``
    (ASCII spellings accepted as :func:`parse` does).

    Lexing only: every lower-case letter is an atom, so words after a formula come back as atoms
    (``"p ∧ q llueve"`` gives ``p``, ``∧``, ``q``, ``l``, ``l``, …) and ``":"`` ends the tokens
    (``"p ∧ q: llueve"`` gives three). Where the formula ends is the parser's question
    (:func:`nanologic.inference.first_complete_formula`)."""
    tokens: list[tuple[str, str]] = []
    try:
        for kind, symbol, _ in _lex(text):
            tokens.append((kind, symbol))
    except FormulaError:
        pass
    return tokens


# Deeper formulas are refused: no formalisation needs them, and an undertrained model can write
# "¬¬¬…" or "p → p → …" up to its token limit, which would overflow Python's recursion here and in
# every recursive function over the tree.
MAX_NESTING = 64


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def nest(self, levels: int, pos: int) -> None:
        self.depth += levels
        if self.depth > MAX_NESTING:
            raise FormulaError(f"formula nested deeper than {MAX_NESTING} levels", self.text, pos)

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.index]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, expected: str) -> FormulaError:
        kind, value, pos = self.peek()
        found = "end of formula" if kind == "end" else repr(value)
        return FormulaError(f"expected {expected}, found {found}", self.text, pos)

    def parse(self) -> Node:
        node = self.biconditional()
        if self.peek()[0] != "end":
            if self.peek()[0] == "rpar":
                raise FormulaError("unbalanced ')'", self.text, self.peek()[2])
            raise self.fail("a connective or end of formula")
        return node

    def biconditional(self) -> Node:
        node = self.implication()
        while self.peek()[0] == "iff":
            self.take()
            node = Binary(IFF, node, self.implication())
        return node

    def implication(self) -> Node:
        node = self.disjunction()
        if self.peek()[0] == "imp":
            self.nest(1, self.take()[2])
            node = Binary(IMPLIES, node, self.implication())
            self.depth -= 1
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek()[0] == "or":
            self.take()
            node = Binary(OR, node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.unary()
        while self.peek()[0] == "and":
            self.take()
            node = Binary(AND, node, self.unary())
        return node

    def unary(self) -> Node:
        negations = 0
        while self.peek()[0] == "not":
            self.nest(1, self.take()[2])
            negations += 1
        node = self.primary()
        self.depth -= negations
        for _ in range(negations):
            node = Not(node)
        return node

    def primary(self) -> Node:
        kind, value, pos = self.peek()
        if kind == "atom":
            self.take()
            return Atom(value)
        if kind == "lpar":
            self.take()
            self.nest(1, pos)
            node = self.biconditional()
            self.depth -= 1
            if self.peek()[0] != "rpar":
                if self.peek()[0] == "end":
                    raise FormulaError("unbalanced '(' (missing ')')", self.text, pos)
                raise self.fail("')'")
            self.take()
            return node
        raise self.fail("an atom, '¬' or '('")


def parse(text: str) -> Node:
    """Parse a formula in Unicode or ASCII notation; raises :class:`FormulaError` with a position."""
    if not isinstance(text, str):
        raise FormulaError(f"expected a string, got {type(text).__name__}", str(text), 0)
    return _Parser(text).parse()


def try_parse(text: str) -> Node | None:
    """Parse or return None (for scoring model outputs that may be malformed)."""
    try:
        return parse(text)
    except FormulaError:
        return None


@dataclass(frozen=True)
class ParsedFormula:
    """A formula string with its tree, parsed once (:func:`parsed`), and what the pipeline derives.

    Args:
        text: the string as written (Unicode or ASCII notation).
        tree: its AST.
    """

    text: str
    tree: Node

    @functools.cached_property
    def pattern(self) -> str:
        """The tree with every atom written ``X`` (:func:`pattern`), e.g. ``"X → ¬X"``."""
        return pattern(self.tree)

    @functools.cached_property
    def unicode(self) -> str:
        """The canonical Unicode spelling (:func:`to_unicode`)."""
        return to_unicode(self.tree)


@functools.lru_cache(maxsize=1 << 17)
def parsed(text: str) -> ParsedFormula:
    """``text`` parsed once per process: the data stages ask for the same formula many times
    (clean, verify, augment, preprocess each need its tree or pattern); the trees are immutable.

    Raises:
        FormulaError: ``text`` does not parse (not cached: a later call raises again).
    """
    return ParsedFormula(text, parse(text))


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _format(node: Node, symbols: Mapping[str, str]) -> str:
    if isinstance(node, Atom):
        return node.name
    if isinstance(node, Not):
        inner = _format(node.child, symbols)
        if isinstance(node.child, Binary):
            inner = f"({inner})"
        return f"{symbols[NOT]}{inner}"
    parts = []
    for side, child in (("left", node.left), ("right", node.right)):
        text = _format(child, symbols)
        # Explicit parentheses around every nested binary except a left-nested chain of the same
        # associative connective (p ∧ q ∧ r): readable, and the parse gives back the same tree.
        if isinstance(child, Binary) and not (
            node.op in (AND, OR) and child.op == node.op and side == "left"
        ):
            text = f"({text})"
        parts.append(text)
    return f"{parts[0]} {symbols[node.op]} {parts[1]}"


def to_unicode(node: Node) -> str:
    """Normalised Unicode form, e.g. ``(p ∧ ¬q) → r``."""
    return _format(node, {op: op for op in CONNECTORS})


def to_ascii(node: Node) -> str:
    """Normalised ASCII form, e.g. ``(p & ~q) -> r``."""
    return _format(node, ASCII)


def normalize(text: str) -> str:
    """Parse and re-format (raises :class:`FormulaError` on bad input)."""
    return to_unicode(parse(text))


# ---------------------------------------------------------------------------------------------
# Structure
# ---------------------------------------------------------------------------------------------


def atoms(node: Node) -> list[str]:
    """Atom names in order of first appearance (left to right)."""
    seen: dict[str, None] = {}

    def visit(n: Node) -> None:
        if isinstance(n, Atom):
            seen.setdefault(n.name, None)
        elif isinstance(n, Not):
            visit(n.child)
        else:
            visit(n.left)
            visit(n.right)

    visit(node)
    return list(seen)


def subformulas(node: Node) -> Iterator[Node]:
    """Every node of the tree, pre-order."""
    yield node
    if isinstance(node, Not):
        yield from subformulas(node.child)
    elif isinstance(node, Binary):
        yield from subformulas(node.left)
        yield from subformulas(node.right)


def connectors_used(node: Node) -> list[str]:
    """Distinct connectives in the formula, in the canonical order ¬ ∧ ∨ → ↔."""
    found = {n.op if isinstance(n, Binary) else NOT for n in subformulas(node) if not isinstance(n, Atom)}
    return [c for c in CONNECTORS if c in found]


def main_connector(node: Node) -> str:
    """The root connective, or ``"atom"`` for a bare atom."""
    if isinstance(node, Atom):
        return "atom"
    return NOT if isinstance(node, Not) else node.op


def depth(node: Node) -> int:
    """Nesting depth of binary connectives; a negated atom counts as depth 0 like an atom."""
    if isinstance(node, Atom):
        return 0
    if isinstance(node, Not):
        return depth(node.child)
    return 1 + max(depth(node.left), depth(node.right))


def size(node: Node) -> int:
    return sum(1 for _ in subformulas(node))


def rename(node: Node, mapping: Mapping[str, str]) -> Node:
    """Rename atoms; names missing from ``mapping`` stay as they are."""
    if isinstance(node, Atom):
        return Atom(mapping.get(node.name, node.name))
    if isinstance(node, Not):
        return Not(rename(node.child, mapping))
    return Binary(node.op, rename(node.left, mapping), rename(node.right, mapping))


def pattern(node: Node) -> str:
    """The logical pattern with atoms abstracted: ``(p ∧ ¬q) → r`` -> ``(X ∧ ¬X) → X``."""
    return to_unicode(rename(node, {a: "X" for a in atoms(node)}))


def atom_letters(n: int) -> list[str]:
    """Canonical atom names p, q, r, s, t, u, v, w, then p1, q1, ..."""
    base = "pqrstuvw"
    return [base[i % len(base)] + (str(i // len(base)) if i >= len(base) else "") for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Semantics
# ---------------------------------------------------------------------------------------------


def evaluate(node: Node, assignment: Mapping[str, bool]) -> bool:
    if isinstance(node, Atom):
        return assignment[node.name]
    if isinstance(node, Not):
        return not evaluate(node.child, assignment)
    a = evaluate(node.left, assignment)
    if node.op == AND:
        return a and evaluate(node.right, assignment)
    if node.op == OR:
        return a or evaluate(node.right, assignment)
    b = evaluate(node.right, assignment)
    return (not a or b) if node.op == IMPLIES else a == b


def assignments(names: Sequence[str]) -> Iterator[dict[str, bool]]:
    """All assignments, in textbook order (first atom varies slowest, True first)."""
    if len(names) > _MAX_TRUTH_TABLE_ATOMS:
        raise ValueError(f"truth table over {len(names)} atoms is too large (max {_MAX_TRUTH_TABLE_ATOMS})")
    for values in itertools.product((True, False), repeat=len(names)):
        yield dict(zip(names, values))


def truth_table(node: Node, names: Sequence[str] | None = None) -> list[tuple[dict[str, bool], bool]]:
    names = list(names) if names is not None else atoms(node)
    return [(row, evaluate(node, row)) for row in assignments(names)]


def equivalent(a: Node, b: Node) -> bool:
    """Same truth value under every assignment of the union of their atoms."""
    names = sorted(set(atoms(a)) | set(atoms(b)))
    return all(evaluate(a, row) == evaluate(b, row) for row in assignments(names))


def is_tautology(node: Node) -> bool:
    return all(value for _, value in truth_table(node))


def is_contradiction(node: Node) -> bool:
    return not any(value for _, value in truth_table(node))


def same_reading(pred: Node, gold: Node) -> bool:
    """Whether ``pred`` reads the sentence as ``gold`` does: equivalent, and, where ``gold`` is a
    tautology or a contradiction, of its shape (the same connective, each side read the same; ∧
    and ∨ chains as lists in any order, ↔ either way round).

    A valid argument's formula, ``((p → q) ∧ p) → q``, is a tautology, so equivalence alone counts
    any tautology right: ``(p ∧ p) → p`` for modus ponens, ``p → p`` for "Viene o no viene"
    (``p ∨ ¬p``). Comparing the shape there judges the premises and the conclusion, each by
    equivalence again.
    """
    if not equivalent(pred, gold):
        return False
    if not (is_tautology(gold) or is_contradiction(gold)):
        return True
    if isinstance(gold, Not):
        return isinstance(pred, Not) and same_reading(pred.child, gold.child)
    if not isinstance(gold, Binary):
        return True
    if not (isinstance(pred, Binary) and pred.op == gold.op):
        return False
    if gold.op in (AND, OR):
        mine, theirs = _chain(pred, gold.op), _chain(gold, gold.op)
        return len(mine) == len(theirs) and any(
            all(same_reading(a, b) for a, b in zip(order, theirs)) for order in itertools.permutations(mine)
        )
    if same_reading(pred.left, gold.left) and same_reading(pred.right, gold.right):
        return True
    return gold.op == IFF and same_reading(pred.left, gold.right) and same_reading(pred.right, gold.left)


def _chain(node: Node, op: str) -> list[Node]:
    """The operands of a chain of ``op`` (``(p ∧ q) ∧ r`` -> [p, q, r])."""
    if isinstance(node, Binary) and node.op == op:
        return _chain(node.left, op) + _chain(node.right, op)
    return [node]


def format_truth_table(node: Node, names: Sequence[str] | None = None) -> list[list[str]]:
    """Rows of ``V``/``F`` strings (Spanish convention), header first."""
    names = list(names) if names is not None else atoms(node)
    rows = [[*names, to_unicode(node)]]
    for row, value in truth_table(node, names):
        rows.append([("V" if row[n] else "F") for n in names] + ["V" if value else "F"])
    return rows


# ---------------------------------------------------------------------------------------------
# Tree edit distance (Zhang & Shasha 1989) for partial credit
# ---------------------------------------------------------------------------------------------


def _label(node: Node) -> str:
    return node.name if isinstance(node, Atom) else (NOT if isinstance(node, Not) else node.op)


def _children(node: Node) -> list[Node]:
    if isinstance(node, Atom):
        return []
    if isinstance(node, Not):
        return [node.child]
    return [node.left, node.right]


def _postorder(root: Node) -> tuple[list[str], list[int], list[int]]:
    """Labels, leftmost-leaf index of each node, and the keyroots, all in post-order."""
    labels: list[str] = []
    leftmost: list[int] = []

    def visit(node: Node) -> int:
        kids = _children(node)
        first_leaf = -1
        for i, kid in enumerate(kids):
            lm = visit(kid)
            if i == 0:
                first_leaf = lm
        labels.append(_label(node))
        index = len(labels) - 1
        leftmost.append(first_leaf if kids else index)
        return leftmost[index]

    visit(root)
    keyroots = sorted({max(i for i in range(len(labels)) if leftmost[i] == lm) for lm in set(leftmost)})
    return labels, leftmost, keyroots


def tree_edit_distance(a: Node, b: Node) -> int:
    """Unit-cost ordered tree edit distance (insert, delete, relabel)."""
    la, lma, kra = _postorder(a)
    lb, lmb, krb = _postorder(b)
    dist = [[0] * len(lb) for _ in range(len(la))]
    for i in kra:
        for j in krb:
            ni, nj = i - lma[i] + 2, j - lmb[j] + 2
            fd = [[0] * nj for _ in range(ni)]
            for x in range(1, ni):
                fd[x][0] = fd[x - 1][0] + 1
            for y in range(1, nj):
                fd[0][y] = fd[0][y - 1] + 1
            for x in range(1, ni):
                for y in range(1, nj):
                    ia, jb = lma[i] + x - 1, lmb[j] + y - 1
                    if lma[ia] == lma[i] and lmb[jb] == lmb[j]:
                        fd[x][y] = min(
                            fd[x - 1][y] + 1, fd[x][y - 1] + 1, fd[x - 1][y - 1] + (la[ia] != lb[jb])
                        )
                        dist[ia][jb] = fd[x][y]
                    else:
                        px, py = lma[ia] - lma[i], lmb[jb] - lmb[j]
                        fd[x][y] = min(fd[x - 1][y] + 1, fd[x][y - 1] + 1, fd[px][py] + dist[ia][jb])
    return dist[-1][-1]


def tree_similarity(a: Node, b: Node) -> float:
    """1 - TED / max(size): 1.0 for identical trees, 0.0 for nothing in common."""
    return 1.0 - tree_edit_distance(a, b) / max(size(a), size(b))
