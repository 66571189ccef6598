"""`json-engine compact`: closed hour buckets of a channel become Parquet, one file per
bucket and partition (compact.py decides what and publishes; sinks/formats/parquet.py
encodes)."""
