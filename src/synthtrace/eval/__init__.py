"""Evaluation: a model on a benchmark, run through the engine (journal, resume, limiter, any backend)
and scored against the benchmark's ground truth. One module per benchmark:

- `medec`: medical error detection and correction (MEDEC), scored as in MEDIQA-CORR 2024.
"""
