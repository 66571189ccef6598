"""Programs the benchmark runs as child processes, one per contender repetition.

Each reads the workload topic from the group it is given, writes every event as one line to
`--out`, and creates `--out` + `.done` once all `--events` lines are written and fsynced.
"""
