"""LRA ListOps generator: determinism, labels (checked by an independent evaluator), length and
tree limits, deduplication, splits, byte encoding, LRA's TSV format, and the distribution of
the fast sampler against a literal reimplementation of LRA's recursive process."""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from bimix_bench.tasks.lra import listops
from bimix_bench.tasks.lra.listops import (
    LISTOPS_N_CLASSES,
    ListOpsConfig,
    encode_listops,
    generate_listops,
    lra_source_form,
    make_splits,
    parse_lra_tsv,
    sample_tokens,
    write_lra_tsv,
)

FIXTURES = Path(__file__).parent / "fixtures" / "lra" / "listops"
TINY = ListOpsConfig(min_len=40, max_len=200)
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")


# --- an independent reading of the LRA form: nested (operator, [operands]) / int -------------
def parse_tree(expr: str):
    """LRA form (parentheses allowed) -> int leaf or (operator, [children]); strict."""
    tokens = [t for t in expr.split() if t not in ("(", ")")]

    def node(i: int):
        t = tokens[i]
        if t.isdigit() and len(t) == 1:
            return int(t), i + 1
        assert t in OPERATORS, f"bad token {t!r}"
        children, i = [], i + 1
        while tokens[i] != "]":
            child, i = node(i)
            children.append(child)
        return (t, children), i + 1

    tree, end = node(0)
    assert end == len(tokens), "trailing tokens"
    return tree


def value(tree) -> int:
    """LRA's semantics, computed the way LRA computes them (numpy median, sum mod 10)."""
    if isinstance(tree, int):
        return tree
    op, children = tree
    vals = [value(c) for c in children]
    if op == "[MIN":
        return min(vals)
    if op == "[MAX":
        return max(vals)
    if op == "[MED":
        return int(np.median(vals))
    return int(np.sum(vals) % 10)


def walk(tree, depth: int = 1):
    """Yield (node, depth) for every node, the root at depth 1."""
    yield tree, depth
    if not isinstance(tree, int):
        for c in tree[1]:
            yield from walk(c, depth + 1)


def lra_to_string(tree) -> str:
    """LRA's `to_string` of its pair encoding ((((op, a1), a2), ...), ']')."""
    if isinstance(tree, int):
        return str(tree)
    op, children = tree
    text = "( " + op + " " + lra_to_string(children[0]) + " )"
    for c in children[1:]:
        text = "( " + text + " " + lra_to_string(c) + " )"
    return "( " + text + " ] )"


def lra_reference_tree(rng: random.Random, depth: int, max_depth: int, max_args: int):
    """A literal transcription of LRA's recursive generate_tree (nested tuples aside)."""
    r = rng.random() if depth < max_depth else 1
    if r > 0.25:
        return rng.choice(range(10)), 1
    n = rng.randint(2, max_args)
    children, length = [], 2
    for _ in range(n):
        child, child_len = lra_reference_tree(rng, depth + 1, max_depth, max_args)
        children.append(child)
        length += child_len
    return (rng.choice(OPERATORS), children), length


def to_expr(tree) -> str:
    if isinstance(tree, int):
        return str(tree)
    return " ".join([tree[0], *(to_expr(c) for c in tree[1]), "]"])


# --- tests ---------------------------------------------------------------------------------------
def test_deterministic_by_seed():
    a = generate_listops(40, seed=3, cfg=TINY)
    assert a == generate_listops(40, seed=3, cfg=TINY)
    assert a[:10] == generate_listops(10, seed=3, cfg=TINY)
    b = generate_listops(40, seed=4, cfg=TINY)
    assert not {e for e, _ in a} & {e for e, _ in b}


def test_splits_identical_in_a_fresh_process_with_another_hash_seed():
    code = (
        "from bimix_bench.tasks.lra.listops import ListOpsConfig, make_splits\n"
        "s = make_splits(30, 5, 5, 11, ListOpsConfig(min_len=20, max_len=80))\n"
        "print(repr(s))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent).stdout
    assert out.strip() == repr(make_splits(30, 5, 5, 11, ListOpsConfig(min_len=20, max_len=80)))


@pytest.mark.parametrize("cfg,n", [(TINY, 300), (ListOpsConfig(), 25)])
def test_labels_lengths_and_tree_limits(cfg: ListOpsConfig, n: int):
    data = generate_listops(n, seed=0, cfg=cfg)
    assert len(data) == n
    assert len({e for e, _ in data}) == n  # deduplicated
    for expr, label in data:
        assert cfg.min_len < len(expr.split()) < cfg.max_len
        tree = parse_tree(expr)
        assert label == value(tree)
        assert 0 <= label < LISTOPS_N_CLASSES
        for node, depth in walk(tree):
            assert depth <= cfg.max_depth
            if not isinstance(node, int):
                assert depth < cfg.max_depth  # operators never sit at max_depth
                assert 2 <= len(node[1]) <= cfg.max_args


def test_limits_bind_at_small_settings():
    """With a shallow, narrow configuration the extremes occur and are never exceeded."""
    cfg = ListOpsConfig(min_len=5, max_len=60, max_depth=4, max_args=3)
    depths, arg_counts, ops = collections.Counter(), collections.Counter(), collections.Counter()
    for expr, _ in generate_listops(300, seed=1, cfg=cfg):
        for node, depth in walk(parse_tree(expr)):
            depths[depth] += 1
            if not isinstance(node, int):
                arg_counts[len(node[1])] += 1
                ops[node[0]] += 1
    assert max(depths) == 4
    assert set(arg_counts) == {2, 3}
    assert set(ops) == set(OPERATORS)


def test_deduplication_where_duplicates_are_common():
    cfg = ListOpsConfig(min_len=3, max_len=6)  # only L = 4 or 5: few distinct trees
    rng = random.Random(5)
    raw = [t for t in (sample_tokens(rng, cfg) for _ in range(20_000)) if t is not None]
    assert len(set(raw)) < len(raw)  # the process does repeat itself here
    data = generate_listops(400, seed=5, cfg=cfg)
    assert len({e for e, _ in data}) == 400


def test_too_narrow_window_fails_instead_of_looping(monkeypatch):
    monkeypatch.setattr(listops, "_MAX_STALE_DRAWS", 2000)
    with pytest.raises(RuntimeError, match="too few distinct"):
        generate_listops(5, seed=0, cfg=ListOpsConfig(min_len=2, max_len=4))  # L = 3 impossible


def test_config_validation():
    with pytest.raises(ValueError):
        ListOpsConfig(min_len=10, max_len=11)
    with pytest.raises(ValueError):
        ListOpsConfig(max_args=1)
    with pytest.raises(ValueError):
        ListOpsConfig(max_depth=1)


def test_splits_disjoint_and_sized():
    splits = make_splits(120, 30, 30, seed=2, cfg=TINY)
    sets = {k: {e for e, _ in v} for k, v in splits.items()}
    assert [len(splits[k]) for k in ("train", "val", "test")] == [120, 30, 30]
    assert all(len(sets[k]) == len(splits[k]) for k in sets)
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"]
    assert not sets["val"] & sets["test"]
    assert set().union(*sets.values()) == {e for e, _ in generate_listops(180, seed=2, cfg=TINY)}


def test_encoding_one_byte_per_token_and_round_trip():
    expr = "[MAX 2 [SM 3 9 ] [MIN 0 [MED 4 7 ] ] ]"
    ids = encode_listops(expr)
    assert ids.dtype == torch.int64 and ids.shape == (len(expr.split()),)
    assert bytes(ids.tolist()) == b"X2S39]N0D47]]]"
    for expr, _ in generate_listops(50, seed=9, cfg=TINY):
        ids = encode_listops(expr)
        assert len(ids) == len(expr.split())
        back = " ".join(listops.BYTE_TO_TOKEN[i] for i in ids.tolist())
        assert back == expr
        assert torch.equal(encode_listops(lra_source_form(expr)), ids)  # parentheses skipped
    with pytest.raises(ValueError, match="unknown ListOps token"):
        encode_listops("[FIRST 1 2 ]")
    with pytest.raises(ValueError):
        encode_listops("[MAX 12 ]")


def test_source_form_matches_lra_to_string():
    for expr, _ in generate_listops(30, seed=4, cfg=TINY):
        assert lra_source_form(expr) == lra_to_string(parse_tree(expr))
    assert lra_source_form("7") == "7"
    with pytest.raises(ValueError):
        lra_source_form("[MAX 1 2")


def test_parse_lra_tsv_fixture():
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        path = FIXTURES / f"basic_{split}.tsv"
        examples = parse_lra_tsv(path)
        assert len(examples) == n
        sources = path.read_text().splitlines()[1:]
        for (expr, label), line in zip(examples, sources):
            assert "(" not in expr and ")" not in expr
            source = line.split("\t")[0]
            tree = parse_tree(source)
            assert expr == to_expr(tree)
            assert label == value(tree)
            assert source == lra_to_string(tree)
    assert parse_lra_tsv(FIXTURES / "basic_train.tsv")[0] == ("[MAX 1 7 2 ]", 7)


def test_tsv_round_trip_and_errors(tmp_path: Path):
    data = generate_listops(20, seed=6, cfg=TINY)
    write_lra_tsv(tmp_path / "x.tsv", data)
    assert parse_lra_tsv(tmp_path / "x.tsv") == data
    (tmp_path / "lf.tsv").write_text("Source\tTarget\n( ( ( [MED 3 ) 8 ) ] )\t5\n")
    assert parse_lra_tsv(tmp_path / "lf.tsv") == [("[MED 3 8 ]", 5)]
    (tmp_path / "bad.tsv").write_text("Source\tTarget\n( ( ( [MED 3 ) 8 ) ] )\t12\n")
    with pytest.raises(ValueError, match="out of range"):
        parse_lra_tsv(tmp_path / "bad.tsv")
    (tmp_path / "nohead.tsv").write_text("( ( ( [MED 3 ) 8 ) ] )\t5\n")
    with pytest.raises(ValueError, match="header"):
        parse_lra_tsv(tmp_path / "nohead.tsv")


def test_label_distribution_not_degenerate():
    labels = collections.Counter(label for _, label in generate_listops(400, seed=8, cfg=TINY))
    assert set(labels) == set(range(LISTOPS_N_CLASSES))
    assert max(labels.values()) / 400 < 0.3
    assert min(labels.values()) / 400 > 0.02


def test_unconditioned_process_probabilities():
    """No length conditioning (shallow trees, wide window): LRA's per-node probabilities."""
    cfg = ListOpsConfig(min_len=0, max_len=10**6, max_depth=3, max_args=10)
    rng = random.Random(12)
    n_draws, roots_digit, n_args, op_children, all_children = 6000, 0, [], 0, 0
    digits, ops = collections.Counter(), collections.Counter()
    for _ in range(n_draws):
        tree = parse_tree(listops.tokens_to_expr(sample_tokens(rng, cfg)))
        for node, _ in walk(tree):
            if isinstance(node, int):
                digits[node] += 1
            else:
                ops[node[0]] += 1
        if isinstance(tree, int):
            roots_digit += 1
            continue
        n_args.append(len(tree[1]))
        all_children += len(tree[1])
        op_children += sum(not isinstance(c, int) for c in tree[1])
    assert abs(roots_digit / n_draws - 0.75) < 4 * (0.75 * 0.25 / n_draws) ** 0.5
    p_child = op_children / all_children
    assert abs(p_child - 0.25) < 4 * (0.25 * 0.75 / all_children) ** 0.5
    assert chisquare([n_args.count(k) for k in range(2, 11)]).pvalue > 1e-3  # 2..10 inclusive
    assert chisquare([digits[d] for d in range(10)]).pvalue > 1e-3
    assert chisquare([ops[o] for o in OPERATORS]).pvalue > 1e-3


def test_matches_lra_recursive_process_conditioned_on_window():
    """The fast sampler and LRA's recursive generator give the same conditional distribution
    (same length and label histograms) inside a length window."""
    cfg = ListOpsConfig(min_len=8, max_len=90, max_depth=6, max_args=10)
    n = 2500
    ref_rng, fast_rng = random.Random(21), random.Random(22)
    ref_len, ref_lab, fast_len, fast_lab = [], [], [], []
    while len(ref_len) < n:
        tree, length = lra_reference_tree(ref_rng, 1, cfg.max_depth, cfg.max_args)
        if cfg.min_len < length < cfg.max_len:
            ref_len.append(length)
            ref_lab.append(value(tree))
    while len(fast_len) < n:
        tokens = sample_tokens(fast_rng, cfg)
        if tokens is not None:
            fast_len.append(len(tokens))
            fast_lab.append(listops.evaluate_tokens(tokens))
    bins = [9, 12, 16, 20, 25, 32, 40, 50, 65, 90]
    table_len = [np.histogram(ref_len, bins)[0], np.histogram(fast_len, bins)[0]]
    table_lab = [np.bincount(ref_lab, minlength=10), np.bincount(fast_lab, minlength=10)]
    assert chi2_contingency(table_len).pvalue > 1e-3
    assert chi2_contingency(table_lab).pvalue > 1e-3
