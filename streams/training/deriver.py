"""The training-sample deriver: a reader of the comparison topic inside the worker.

Exactly once end to end by transaction (streams/readers/derived.py): a sample is published in
the checkpoint transaction that commits its comparison's offset, so a replay after a crash
never shows a second copy to the read-committed sink. Its id is a UUIDv5 of the comparison_id
and it is keyed by that id, so a copy published by anyone else lands in the same partition,
where the training-sample sink writes each sample_id once. A sample that is not a valid
training sample (an output past its limits) or that its topic cannot take is the
comparison's dead letter, with the sample as payload.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.config import JsonEngineConfig
from streams.readers.dead_letter import DeadLetterPolicy
from streams.readers.derived import DerivingReader
from streams.readers.outbox import MessageLimits
from streams.topics import topic_name
from streams.training.samples import derive_sample
from streams.validation import ValidationError, Validator


class TrainingDeriver(DerivingReader):
    """Reader of the comparison topic: derives, validates and publishes samples."""

    def __init__(
        self,
        config: JsonEngineConfig,
        validator: Validator,
        dead_letters: DeadLetterPolicy,
        limits: MessageLimits,
    ):
        super().__init__(
            topic_name(config, "training_sample"),
            "comparison_result",
            topic_name(config, "comparison_result"),
            dead_letters,
            limits,
        )
        self.thresholds = config.training.thresholds
        self.validator = validator

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        if value is None:
            return []  # the comparison sink dead-letters it
        sample = derive_sample(value, self.thresholds)  # its time is placed at the edge
        if sample is None:
            return []
        raw = orjson.dumps(sample)
        try:
            self.validator.validate("training_sample", raw)
        except ValidationError as exc:  # e.g. an output past the sample's length limits
            error = ValidationError(exc.reason, f"its training sample: {exc}", path=exc.path)
            self.reject(partition, record, error, raw)
            return []
        return [(sample["sample_id"].encode(), raw)]
