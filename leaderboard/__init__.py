"""Aggregation of run records into the published leaderboard tables."""
