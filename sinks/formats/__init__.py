"""Output formats beside the destinations (sinks/files/, sinks/s3/): how the bytes of a
finished file are encoded (compression.py)."""
