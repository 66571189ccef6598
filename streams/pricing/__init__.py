"""Prices per engine and what a window of executions cost (issue 26)."""
