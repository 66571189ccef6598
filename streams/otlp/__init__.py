"""OpenTelemetry GenAI spans from Kafka as engine executions (README → OpenTelemetry input)."""
