"""Evaluation: greedy decoding, safe checkpoint loading, per-task scoring, statistics, comparison.

Modules: ``decode`` (KV-cache greedy decoding), ``checkpoints`` (``weights_only=True`` loading),
``evaluate`` (one checkpoint on the test split), ``stats`` (bootstrap CIs, paired differences,
exact McNemar), ``compare`` (all models against the champion reference) and ``plots``.
"""
