"""Command-line tools: ``python -m eval.score`` (score videos) and ``python -m eval.weights`` (weights)."""
