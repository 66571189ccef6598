"""Offline analyses of the sunk files (they read finished lines, never a broker)."""
