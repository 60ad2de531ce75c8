"""The registry of compression methods behind ``harness compress --method NAME``.

A method is a function ``compress(teacher, out, *, corpus, preset, device, **options) -> Path``
that writes a compact checkpoint (``upstreams.checkpoint`` format) to ``out`` and returns it. The
checkpoint's metadata holds ``compression = {"method", "teacher", "sparsity", "dir", ...}``, which
the run records and the leaderboard read. Entries are imported on first use.
"""

from core.registry import Registry

METHODS: Registry = Registry("compression method")
METHODS.register("convexity", "harness.compression.convexity:compress_convexity")
METHODS.register("dphubert", "harness.compression.dphubert:compress_dphubert")
