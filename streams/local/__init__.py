"""Local servers for the demo, the tests and the bench: Kafka and an S3 gateway."""
