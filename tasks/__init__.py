"""Corpora, SUPERB-style downstream tasks, their heads and metrics."""
