"""Baseline token mixers: one module per model, each with a reference path beside its fast path."""
