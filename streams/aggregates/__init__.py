"""Per-engine windowed aggregates, in two phases (one reader of the worker).

`local` folds partials per input partition, `merge` emits each window per engine, `changelog`
keeps their state, `windows` holds the window arithmetic, `aggregator` wires them together.
"""
