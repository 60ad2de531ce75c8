"""Command line, compression methods, pipeline and run records."""
