"""`llmtune evaluate`'s kinds of evaluation, one module each (classification, causal_lm, masked_lm, generation).

The task registry (`llmtune.tasks.registry.EVALUATIONS`) lists them; `llmtune.tasks.evaluate` picks one and
runs it. Shared parts (the context, loading the split) are in `common`.
"""
