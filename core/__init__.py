"""The ground floor: what every other package uses, and nothing that knows about them.

- :mod:`core.registry`: the one small registry (tasks, methods, corpora, architectures, benchmarks);
- :mod:`core.files`: atomic writes and content hashes;
- :mod:`core.audio`: audio constants (the sample rate), defined once;
- :mod:`core.paths`: where data, runs, records and the embedded teacher live by default;
- :mod:`core.records`: the run-record format (schema, version, writer, reader, identity).

Imports point one way: ``core`` <- ``upstreams`` <- ``tasks`` <- ``leaderboard`` / ``harness``.
Nothing here imports torch or any package of this project.
"""
