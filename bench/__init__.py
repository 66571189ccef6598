"""Benchmarks. `python -m bench` runs the whole comparison (issue 7, see bench/__main__.py);
`python -m bench.<name>` runs one of the narrower ones and prints its table."""
