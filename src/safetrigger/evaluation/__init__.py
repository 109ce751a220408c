"""Evaluation: benchmarks (query sets + metric kind + scorers) and the lm-evaluation-harness bridge."""
