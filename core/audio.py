"""Audio constants shared by corpora, models and the evaluation engine."""

#: Every corpus is prepared at, and every encoder consumes, 16 kHz mono audio (as SUPERB's).
SAMPLE_RATE = 16_000
