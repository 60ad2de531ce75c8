"""Compression methods: layer pruning by convexity, and (later) DPHuBERT.

Modules are imported directly (``harness.compression.graph_convexity``); this file stays free of
imports so that worker processes and the CLI start fast.
"""
