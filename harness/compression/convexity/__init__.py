"""Convexity-based layer pruning (Dorszewski, Tetkova and Hansen, 2024).

- ``method.py``: ``compress_convexity``: score the teacher, choose the depth, write the cut(s);
- ``options.py``: its command-line options and defaults (torch-free);
- ``graph.py``: graph convexity of labelled points (the authors' score);
- ``layer_scores.py``: the other per-layer scores (linear probes, block influence, CKA);
- ``selection.py``: the rule that picks a depth from the curves (peak, plateau);
- ``scores_cache.py``: the teacher's scores, cached across compressions;
- ``curves.py``: the curves file (``convexity.json``) and the compression metadata it travels in;
- ``plot.py``: the curves as a picture.
"""
