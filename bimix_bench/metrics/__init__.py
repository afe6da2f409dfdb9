"""Metric helpers shared by task families: QA answer scoring (qa), greedy generation through a
model's prefill/decode path (generation), and per-position losses from one forward pass
(token_losses)."""
