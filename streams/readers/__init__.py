"""What every reader of a topic builds on, in the worker or beside it (aggregates, training,
otlp): the route that parses and validates once, the outbox a checkpoint publishes, derived
records, and the dead-letter policy. Imports nothing of the worker."""
