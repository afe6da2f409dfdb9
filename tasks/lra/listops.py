"""Long Range Arena ListOps: data generator, label evaluator, byte encoding, TSV reader.

The process is LRA's (Tay et al. 2021, ``lra_benchmarks/data/listops.py``), reimplemented:

* A node at depth ``d`` (the root has depth 1) is an operator with probability ``value_p``
  (0.25) when ``d < max_depth``; otherwise, and always at ``d == max_depth``, it is a digit
  drawn uniformly from 0..9. So operators nest at most ``max_depth - 1`` deep.
* An operator draws its operand count uniformly from ``2..max_args`` *inclusive* (LRA calls
  ``random.randint(2, max_args)``), generates its operands recursively, and picks its operator
  uniformly from MIN, MAX, MED, SM. (LRA draws the operator after the operands; the draws are
  independent, so drawing it first gives the same distribution.)
* The length L counts tokens: one per digit, two per operator (its opening token and its
  closing ``]``). LRA's parentheses are not counted. A tree is kept iff
  ``min_len < L < max_len`` (both strict; LRA: 500 < L < 2000), and trees are deduplicated.

Labels (LRA's ``to_value``):
  MIN, MAX  the minimum / maximum of the operands;
  MED       ``int(numpy.median(operands))``: for an even count numpy averages the two middle
            values and ``int`` truncates, so the label is ``(a + b) // 2`` of the two middle
            values (operands are never negative, so truncation is the floor);
  SM        the sum of the operands modulo 10.

Token forms:
  LRA form   space-separated tokens, e.g. ``[MAX 2 [SM 3 9 ] ]``; this is what the generator
             returns. LRA's released TSVs additionally wrap every (partial application) pair in
             ``(`` ... ``)``: ``( ( ( [MAX 2 ) ( ( ( [SM 3 ) 9 ) ] ) ) ] )``. The reader and the
             encoder drop those parentheses; `lra_source_form` writes them back.
  bytes      one byte per LRA token, so a sequence of L tokens is L byte ids: digits ``0``-``9``,
             ``N`` = ``[MIN``, ``X`` = ``[MAX``, ``D`` = ``[MED``, ``S`` = ``[SM``, ``]`` = close.
             (LRA's own pipeline tokenised with an alphanumeric-only tokenizer that drops
             ``]``; keeping the closing bracket, as later ListOps work does, keeps the tree
             recoverable from the sequence.)

Sampling is LRA's rejection sampling of whole trees, made fast without changing the
distribution: tokens are emitted straight into a byte buffer in prefix order, and a tree is
abandoned as soon as a lower bound on its final length (tokens so far + one per pending
operand + one per pending ``]``) reaches ``max_len``, since such a tree is rejected anyway.
Abandoning depends only on the draws made so far and the next tree uses fresh draws, so the
accepted trees have exactly the conditional distribution of LRA's process.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import torch

LISTOPS_N_CLASSES = 10

# LRA token -> byte id (one byte per token). Digits map to their ASCII codes.
OPERATOR_BYTES: dict[str, int] = {
    "[MIN": ord("N"), "[MAX": ord("X"), "[MED": ord("D"), "[SM": ord("S"),
}
CLOSE_BYTE = ord("]")
DIGIT_BYTES = tuple(ord(str(d)) for d in range(10))
TOKEN_TO_BYTE: dict[str, int] = {
    **OPERATOR_BYTES,
    "]": CLOSE_BYTE,
    **{str(d): b for d, b in enumerate(DIGIT_BYTES)},
}
BYTE_TO_TOKEN: dict[int, str] = {b: t for t, b in TOKEN_TO_BYTE.items()}
_TOKEN_OR_PAREN_TO_BYTE = {**TOKEN_TO_BYTE, "(": 0, ")": 0}
_OPERATOR_BYTE_LIST = tuple(OPERATOR_BYTES.values())  # the operator is drawn uniformly from these
_MIN, _MAX, _MED, _SM = (OPERATOR_BYTES[t] for t in ("[MIN", "[MAX", "[MED", "[SM"))
_ZERO, _NINE = DIGIT_BYTES[0], DIGIT_BYTES[-1]
_MAX_STALE_DRAWS = 1_000_000


@dataclass(frozen=True)
class ListOpsConfig:
    """Parameters of the generator; the defaults are LRA's ``basic`` task."""

    min_len: int = 500  # keep trees with min_len < L (strict), L = token count without parentheses
    max_len: int = 2000  # ... and L < max_len (strict)
    max_depth: int = 10  # the root has depth 1; a node at depth max_depth is always a digit
    max_args: int = 10  # operand count of an operator is uniform on 2..max_args (inclusive)
    # Probability that a node above max_depth is an operator (LRA's VALUE_P: a node is a digit
    # when random() > VALUE_P, so despite its name this is the operator probability).
    value_p: float = 0.25

    def __post_init__(self) -> None:
        if self.min_len < 0 or self.max_len <= self.min_len + 1:
            raise ValueError(f"empty length window: {self.min_len} < L < {self.max_len}")
        if self.max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {self.max_depth}")
        if self.max_args < 2:
            raise ValueError(f"max_args must be >= 2, got {self.max_args}")
        if not 0.0 <= self.value_p <= 1.0:
            raise ValueError(f"value_p must be in [0, 1], got {self.value_p}")
        if self.min_len >= 1 and (self.max_depth < 2 or self.value_p == 0.0):
            raise ValueError("only single digits can be generated, and the window excludes L = 1")


def sample_tokens(rng: random.Random, cfg: ListOpsConfig) -> bytes | None:
    """One draw of LRA's tree process as byte ids in prefix order; None when the tree's length
    falls outside the window (that is, the draw is rejected). Uniform choices among k options
    use ``int(k * random())``, uniform up to the 2**-53 grain of ``random()``."""
    rand = rng.random
    p_op, max_depth = cfg.value_p, cfg.max_depth
    n_arg_choices = cfg.max_args - 1  # operand counts 2..max_args
    limit = cfg.max_len
    out = bytearray()
    open_operands: list[int] = []  # per open operator: operands it still needs
    # Tokens certainly still to come: one per operand slot not yet started, one per pending ']'.
    pending = 1  # the root
    while True:
        if len(open_operands) + 1 < max_depth and rand() <= p_op:
            # Operator: one slot becomes n operand slots plus a closing bracket.
            n = 2 + int(rand() * n_arg_choices)
            out.append(_OPERATOR_BYTE_LIST[int(rand() * 4)])
            open_operands.append(n)
            pending += n
            if len(out) + pending >= limit:
                return None  # L >= max_len whatever happens next
            continue
        out.append(DIGIT_BYTES[int(rand() * 10)])
        pending -= 1
        # A digit may complete its parent, the grandparent, ...: close them.
        while open_operands:
            open_operands[-1] -= 1
            if open_operands[-1]:
                break
            open_operands.pop()
            out.append(CLOSE_BYTE)
            pending -= 1
        if not open_operands:
            break
    return bytes(out) if cfg.min_len < len(out) < cfg.max_len else None


def evaluate_tokens(tokens: bytes) -> int:
    """The label of a tree given as byte ids (see the module docstring for MED and SM)."""
    if len(tokens) == 1 and tokens[0] in DIGIT_BYTES:
        return tokens[0] - _ZERO
    ops: list[int] = []  # operator byte of each open operator
    operands: list[list[int]] = []  # values of its operands so far
    top: list[int] | None = None  # operands[-1], or None when no operator is open
    result: int | None = None
    for b in tokens:
        if _ZERO <= b <= _NINE:  # most tokens are digits: test them first
            if top is None:
                raise ValueError("digit outside any operator")
            top.append(b - _ZERO)
        elif b == CLOSE_BYTE:
            if top is None:
                raise ValueError("unmatched ']'")
            value = _apply(ops.pop(), operands.pop())
            if operands:
                top = operands[-1]
                top.append(value)
            else:
                top, result = None, value
        elif b in _OPERATOR_BYTE_LIST:
            if result is not None:
                raise ValueError("tokens hold more than one tree")
            ops.append(b)
            top = []
            operands.append(top)
        else:
            raise ValueError(f"not a ListOps byte: {b!r}")
    if result is None or operands:
        raise ValueError("unbalanced ListOps expression")
    return result


def _apply(op: int, args: list[int]) -> int:
    if not args:
        raise ValueError("operator without operands")
    if op == _MIN:
        return min(args)
    if op == _MAX:
        return max(args)
    if op == _SM:
        return sum(args) % 10
    s = sorted(args)  # MED: int(numpy.median(s)) for non-negative integers
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2


def tokens_to_expr(tokens: bytes) -> str:
    """Byte ids -> LRA form (space-separated tokens, no parentheses)."""
    return " ".join(map(BYTE_TO_TOKEN.__getitem__, tokens))


def expr_to_tokens(expr: str) -> bytes:
    """LRA form (with or without LRA's parentheses) -> byte ids, one per LRA token."""
    try:
        ids = bytes(map(_TOKEN_OR_PAREN_TO_BYTE.__getitem__, expr.split()))
    except KeyError as err:
        raise ValueError(f"unknown ListOps token {err.args[0]!r}") from None
    return ids.replace(b"\0", b"")  # parentheses map to 0: drop them


def encode_listops(expr: str) -> torch.Tensor:
    """LRA form -> (L,) int64 byte ids; LRA's parentheses are skipped."""
    return torch.frombuffer(bytearray(expr_to_tokens(expr)), dtype=torch.uint8).long()


def generate_listops(n: int, seed: int, cfg: ListOpsConfig | None = None) -> list[tuple[str, int]]:
    """`n` distinct expressions (LRA form) with their labels, in order of generation.
    Deterministic given (n, seed, cfg): the first k of n are the k generated with the same seed."""
    cfg = cfg or ListOpsConfig()
    rng = random.Random(seed)
    seen: set[bytes] = set()
    found: list[bytes] = []
    stale = 0  # draws since the last new tree: guards windows with too few distinct trees
    while len(found) < n:
        tokens = sample_tokens(rng, cfg)
        if tokens is not None and tokens not in seen:
            seen.add(tokens)
            found.append(tokens)
            stale = 0
        else:
            stale += 1
            if stale > _MAX_STALE_DRAWS:
                raise RuntimeError(
                    f"no new tree in {_MAX_STALE_DRAWS} draws after {len(found)} of {n}: the "
                    f"window {cfg.min_len} < L < {cfg.max_len} holds too few distinct (or too "
                    "unlikely) trees"
                )
    return [(tokens_to_expr(t), evaluate_tokens(t)) for t in found]


def make_splits(n_train: int, n_val: int, n_test: int, seed: int,
                cfg: ListOpsConfig | None = None) -> dict[str, list[tuple[str, int]]]:
    """Disjoint train/val/test splits, as LRA makes them: one deduplicated pool, then cut.
    The pool is shuffled first (LRA cuts a Python set in hash order), so the splits are
    exchangeable rather than test holding only the trees first seen late."""
    pool = generate_listops(n_train + n_val + n_test, seed, cfg)
    random.Random(f"listops-splits-{seed}").shuffle(pool)
    return {
        "train": pool[:n_train],
        "val": pool[n_train : n_train + n_val],
        "test": pool[n_train + n_val :],
    }


def parse_lra_tsv(path: str | Path) -> list[tuple[str, int]]:
    """Read LRA's released ``basic_{train,val,test}.tsv`` (header ``Source<TAB>Target``).
    Expressions come back in LRA form without parentheses, as `generate_listops` returns them."""
    examples: list[tuple[str, int]] = []
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
            raise ValueError(f"{path}: expected a 'Source<TAB>Target' header, got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line_no}: expected 2 fields, got {len(row)}")
            try:
                label = int(row[1])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: label {row[1]!r} is not an integer") from None
            if not 0 <= label < LISTOPS_N_CLASSES:
                raise ValueError(f"{path}:{line_no}: label {label} out of range")
            try:
                tokens = expr_to_tokens(row[0])
            except ValueError as err:
                raise ValueError(f"{path}:{line_no}: {err}") from None
            examples.append((tokens_to_expr(tokens), label))
    return examples


def lra_source_form(expr: str) -> str:
    """LRA form -> the parenthesised text of LRA's TSV ``Source`` column. LRA nests each
    operand application in a pair, so an operator with k operands reads
    ``( `` * (k + 1) + ``[OP a1 ) a2 ) ... ak ) ] )``."""
    ids = expr_to_tokens(expr)
    evaluate_tokens(ids)  # raises ValueError unless `expr` is one well-formed tree
    tokens = [BYTE_TO_TOKEN[b] for b in ids]
    # Pass 1: operand count of the operator opened at each position.
    n_operands: dict[int, int] = {}
    stack: list[int] = []
    for i, t in enumerate(tokens):
        if t == "]":
            stack.pop()
            continue
        if stack:
            n_operands[stack[-1]] += 1
        if t in OPERATOR_BYTES:
            n_operands[i] = 0
            stack.append(i)
    # Pass 2: every finished operand (digit or closed operator) is followed by ")".
    parts: list[str] = []
    depth = 0
    for i, t in enumerate(tokens):
        if t in OPERATOR_BYTES:
            parts.append("( " * (n_operands[i] + 1) + t)
            depth += 1
            continue
        if t == "]":
            parts.append("] )")
            depth -= 1
        else:
            parts.append(t)
        if depth:
            parts.append(")")
    return " ".join(parts)


def write_lra_tsv(path: str | Path, examples: list[tuple[str, int]]) -> None:
    """Write examples in the format of LRA's released TSVs (parenthesised sources)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\r\n")
        writer.writerow(["Source", "Target"])
        for expr, label in examples:
            writer.writerow([lra_source_form(expr), label])
