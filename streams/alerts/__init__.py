"""Regression alerts: an engine's window tested against its own trailing baseline."""
