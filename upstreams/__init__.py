"""Prunable HuBERT / WavLM / wav2vec 2.0 encoders, checkpoint import/export, s3prl registration."""
