"""QA answer scoring (normalization, exact match, token F1, depth buckets) on hand-made cases,
and batched greedy generation through prefill/decode against a plain full-forward loop, for
every registered model."""

from __future__ import annotations

import math

import pytest
import torch

from bimix_bench.metrics.generation import greedy_generate
from bimix_bench.metrics.qa import (
    best_scores,
    depth_bucket_metrics,
    exact_match,
    normalize_answer,
    token_f1,
)
from bimix_bench.models.backbone import Architecture, LanguageModel
from bimix_bench.registry import MODELS


def tiny_language_model(name: str, max_seq_len: int, seed: int = 0) -> LanguageModel:
    """A registered model with d_model about 16 and two layers, randomly initialised, in eval
    mode (built directly: solving a parameter budget is not what these tests are about)."""
    spec = MODELS.get(name).obj
    step = math.lcm(2 * 2, spec.width_multiple)  # two heads
    d_model = step * max(1, round(16 / step))
    torch.manual_seed(seed)
    arch = Architecture(d_model, n_layers=2, n_heads=2, ffn_hidden=2 * d_model, max_seq_len=max_seq_len)
    return LanguageModel(arch, spec, spec.default_options).eval()


# --- normalization, EM, F1 -------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("The Cat sat on a mat.", "cat sat on mat"),
    ("  An   apple,\tthe pear\n", "apple pear"),
    ("theater and anathema", "theater and anathema"),  # articles only as whole words
    ("U.S.A.", "usa"),
    ("the", ""),
    ("a an the", ""),
    ("?!...", ""),
    ("", ""),
    ("Ärger über Öl", "ärger über öl"),  # non-ASCII letters are kept, lower-cased
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match():
    assert exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert exact_match("Eiffel Towers", "Eiffel Tower") == 0.0
    assert exact_match("", "") == 1.0
    assert exact_match("the", "") == 1.0  # both normalize to nothing
    assert exact_match("42", "forty-two") == 0.0


def test_token_f1_known_values():
    assert token_f1("Barack Obama", "Barack Obama") == 1.0
    # precision 1/2, recall 1/1 -> 2/3
    assert math.isclose(token_f1("president obama", "Obama"), 2 / 3)
    # "a" and "the" vanish: pred {new, york, city}, gold {new, york}: P 2/3, R 1 -> 0.8
    assert math.isclose(token_f1("a New York city", "the new york"), 0.8)
    assert token_f1("paris", "london") == 0.0


def test_token_f1_counts_repeated_tokens_with_multiplicity():
    # overlap = min(3, 1) = 1: P 1/3, R 1/2 -> F1 = 0.4
    assert math.isclose(token_f1("red red red", "red blue"), 0.4)
    # overlap min(2, 2) + min(1, 0) = 2: P 2/3, R 2/2 -> 0.8
    assert math.isclose(token_f1("go go stop", "go go"), 0.8)


def test_token_f1_empty_cases():
    assert token_f1("", "") == 1.0
    assert token_f1("the an a", "...") == 1.0  # both empty after normalization
    assert token_f1("", "something") == 0.0
    assert token_f1("answer", "") == 0.0
    assert token_f1("!!!", "yes") == 0.0


def test_best_scores_takes_the_best_gold():
    em, f1 = best_scores("New York", ["NYC", "new york", "New York City"])
    assert em == 1.0 and f1 == 1.0
    em, f1 = best_scores("York City", ["Paris", "New York City"])
    assert em == 0.0 and math.isclose(f1, 0.8)
    with pytest.raises(ValueError):
        best_scores("x", [])


def test_depth_bucket_metrics():
    depths = [0.0, 0.1, 0.25, 0.99, 1.0, None, 0.5]
    em = [1, 0, 1, 1, 0, 1, 0]
    f1 = [1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.25]
    out = depth_bucket_metrics(depths, em, f1, n_buckets=5)
    assert out["em_depth_0.0-0.2"] == 0.5 and out["f1_depth_0.0-0.2"] == 0.75
    assert out["n_depth_0.0-0.2"] == 2
    assert out["em_depth_0.2-0.4"] == 1.0 and out["n_depth_0.2-0.4"] == 1
    assert out["em_depth_0.4-0.6"] == 0.0 and out["f1_depth_0.4-0.6"] == 0.25
    assert "em_depth_0.6-0.8" not in out  # empty buckets are omitted, not NaN
    assert out["em_depth_0.8-1.0"] == 0.5 and out["n_depth_0.8-1.0"] == 2  # depth 1.0 -> last bucket
    assert sum(v for k, v in out.items() if k.startswith("n_depth")) == 6  # None left out
    with pytest.raises(ValueError):
        depth_bucket_metrics([1.5], [1], [1.0], 5)


# --- greedy generation --------------------------------------------------------------------
def naive_greedy(model: LanguageModel, prompt: torch.Tensor, max_new: int, stop_id: int) -> list[int]:
    """One full forward per generated token: the definition the batched decoder must match."""
    seq = prompt.long().tolist()
    out: list[int] = []
    for _ in range(max_new):
        token = int(model(torch.tensor([seq]))[0, -1].argmax())
        if token == stop_id:
            break
        out.append(token)
        seq.append(token)
    return out


@pytest.mark.parametrize("name", MODELS.names())
def test_batched_greedy_matches_full_forward_for_every_model(name):
    model = tiny_language_model(name, max_seq_len=32).double()
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (n,), generator=g) for n in (5, 9, 6, 12, 9)]
    # The stop id is the token the model emits first after prompt 2, so that row stops at once
    # while the others (almost surely) keep going: stopping and continuing are both exercised.
    stop = naive_greedy(model, prompts[2], 1, stop_id=-1)[0]
    expected = [naive_greedy(model, p, 6, stop) for p in prompts]
    with torch.no_grad():
        got = greedy_generate(model, prompts, max_new_tokens=6, stop_id=stop,
                              device=torch.device("cpu"), batch_size=3)
    assert got == expected
    assert expected[2] == []


def test_greedy_generate_rejects_bad_input():
    model = tiny_language_model("transformer", 16)
    with pytest.raises(ValueError):
        greedy_generate(model, [torch.tensor([1, 2])], 0, 0, torch.device("cpu"))
    with pytest.raises(ValueError):
        greedy_generate(model, [torch.tensor([], dtype=torch.long)], 2, 0, torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_greedy_generate_on_cuda_matches_cpu():
    model = tiny_language_model("transformer", max_seq_len=32).double()  # no near-ties flip
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 256, (n,), generator=g) for n in (7, 3, 11)]
    cpu = greedy_generate(model, prompts, 5, -1, torch.device("cpu"))
    gpu = greedy_generate(model.cuda(), prompts, 5, -1, torch.device("cuda"))
    assert gpu == cpu


# --- each data set's official F1 rules --------------------------------------------------------
def test_hotpotqa_f1_gives_zero_when_yes_no_or_noanswer_differ():
    # hotpot_evaluate_v1.py: a special answer on either side must match exactly.
    assert token_f1("yes it is", "yes", "hotpotqa") == 0.0
    assert token_f1("yes", "yes it is", "hotpotqa") == 0.0
    assert token_f1("no way", "No.", "hotpotqa") == 0.0
    assert token_f1("noanswer here", "noanswer", "hotpotqa") == 0.0
    assert token_f1("Yes!", "yes", "hotpotqa") == 1.0
    assert math.isclose(token_f1("president obama", "Obama", "hotpotqa"), 2 / 3)
    assert token_f1("", "", "hotpotqa") == 0.0  # no shared token: 0 in the official script
    assert best_scores("yes it is", ["yes"], "hotpotqa") == (0.0, 0.0)
    # SQuAD (generated subtasks) and LongBench's qa_f1_score have no such rule.
    assert token_f1("yes it is", "yes") == 0.5
    assert token_f1("yes it is", "yes", "longbench") == 0.5
    assert token_f1("", "", "longbench") == 0.0 and token_f1("", "") == 1.0
    with pytest.raises(ValueError, match="unknown QA scoring"):
        token_f1("a", "b", "trec")


def test_each_multidoc_subtask_uses_its_data_sets_scoring():
    from bimix_bench.tasks.multidoc_qa import MultiDocQA
    from bimix_bench.tasks.multidoc_qa.evaluation import scoring_for

    expected = {"hotpotqa": "hotpotqa", "longbench_hotpotqa": "longbench",
                "longbench_2wikimqa": "longbench", "longbench_musique": "longbench",
                "multikey_needle": "squad", "bridge": "squad"}
    names = {s.name for s in MultiDocQA().subtasks()}
    for subtask, scoring in expected.items():
        assert subtask in names and scoring_for(subtask) == scoring
