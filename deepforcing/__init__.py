"""deepforcing: one causal Wan2.1 engine with interchangeable KV-cache policies, plus evaluation."""

__version__ = "0.1.0"
