"""One module per VBench dimension; each class is a lazy entry of ``deepforcing.metrics.METRICS``."""
