"""The worker process: Faust app, librdkafka batch loop, sinks, checkpoints."""
