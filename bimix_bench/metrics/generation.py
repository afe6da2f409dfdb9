"""Batched greedy generation through a model's prefill / decode_step path (the path a deployed
model would use), for prompts of unequal length.

Prompts are sorted by length and batched. The batch's shortest prompt length m is run in one
parallel prefill; from there every step feeds each row either its next prompt token (rows
whose prompt is longer than m) or its own last prediction, so all rows share one decode state
without padding tokens ever entering the model. Sorting keeps these catch-up steps few.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import torch

from bimix_bench.models.tokenizer import PAD


@torch.no_grad()
def greedy_generate(
    model,
    prompts: Sequence[torch.Tensor],
    max_new_tokens: int,
    stop_id: int,
    device: torch.device,
    batch_size: int = 16,
    autocast: Callable[[], ContextManager] | None = None,
) -> list[list[int]]:
    """Greedy continuations of each prompt ((L_i,) int ids, L_i >= 1), in the input order.

    A continuation ends at `stop_id` (not included) or after `max_new_tokens` tokens.
    `model` is a LanguageModel in eval mode with `prefill(tokens, max_len)` and
    `decode_step(token, states)`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt: greedy generation needs at least one token to condition on")
    autocast = autocast or nullcontext
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        outputs = _generate_batch(model, [prompts[i] for i in rows], max_new_tokens, stop_id,
                                  device, autocast)
        for i, out in zip(rows, outputs):
            results[i] = out
    return results


def _generate_batch(model, prompts: list[torch.Tensor], max_new: int, stop_id: int,
                    device: torch.device, autocast) -> list[list[int]]:
    lengths = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
    B, shortest, longest = len(prompts), int(lengths.min()), int(lengths.max())
    padded = torch.full((B, longest), PAD, dtype=torch.long, device=device)  # (B, longest)
    for row, p in enumerate(prompts):
        padded[row, : len(p)] = p.to(device=device, dtype=torch.long)
    generated = torch.full((B, max_new), stop_id, dtype=torch.long, device=device)  # (B, max_new)
    n_generated = torch.zeros(B, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    with autocast():
        logits, states = model.prefill(padded[:, :shortest], max_len=longest + max_new)  # (B, V)
    position = shortest  # the position the current logits predict
    while True:
        prediction = logits.argmax(-1)  # (B,)
        generating = (position >= lengths) & ~finished
        slot = n_generated.clamp(max=max_new - 1)
        generated[generating, slot[generating]] = prediction[generating]
        n_generated += generating.long()
        finished |= generating & ((prediction == stop_id) | (n_generated >= max_new))
        # Rows still inside their prompt are never finished; stop once every row is done.
        if bool(finished.all()):
            break
        in_prompt = position < lengths
        next_token = torch.where(in_prompt, padded[:, min(position, longest - 1)], prediction)
        with autocast():
            logits = model.decode_step(next_token, states)
        position += 1
    out = []
    for row in range(B):
        tokens = generated[row, : int(n_generated[row])].tolist()
        out.append(tokens[: tokens.index(stop_id)] if stop_id in tokens else tokens)
    return out


def generate_answers(model, prompts: Sequence[torch.Tensor], device: torch.device, cfg: dict,
                     max_answer_bytes: int, decode_batch_size: int) -> list[str]:
    """The model's greedy answer (text up to EOS) to each byte-token prompt, decoded in eval
    mode under the run's precision: the answer-scoring step every QA-style family shares."""
    from bimix_bench.config.sections import train_config
    from bimix_bench.engine.device import autocast_factory
    from bimix_bench.models.tokenizer import EOS, decode

    model.eval()
    outputs = greedy_generate(
        model, list(prompts), max_new_tokens=max_answer_bytes + 1, stop_id=EOS, device=device,
        batch_size=decode_batch_size, autocast=autocast_factory(device, train_config(cfg).precision),
    )
    return [decode(ids) for ids in outputs]
