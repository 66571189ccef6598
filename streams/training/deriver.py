"""The training-sample deriver: a reader of the comparison topic inside the worker.

Exactly once end to end by transaction (streams/readers/derived.py): a sample is published in
the checkpoint transaction that commits its comparison's offset, so a replay after a crash
never shows a second copy to the read-committed sink. Its id is a UUIDv5 of the comparison_id
and it is keyed by that id, so a copy published by anyone else lands in the same partition,
where the training-sample sink writes each sample_id once.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from streams.config import JsonEngineConfig
from streams.readers.derived import DerivingReader
from streams.readers.route import record_time
from streams.topics import topic_name
from streams.training.samples import derive_sample
from streams.validation import ValidationError, Validator

log = logging.getLogger(__name__)


class TrainingDeriver(DerivingReader):
    """Reader of the comparison topic: derives, validates and publishes samples."""

    def __init__(self, config: JsonEngineConfig, validator: Validator):
        super().__init__(topic_name(config, "training_sample"))
        self.thresholds = config.training.thresholds
        self.validator = validator

    def derive(
        self, partition: int, record: Any, value: dict[str, Any] | None
    ) -> list[tuple[bytes, bytes]]:
        if value is None:
            return []  # the comparison sink dead-letters it
        sample = derive_sample(value, self.thresholds, record_time(record))
        if sample is None:
            return []
        try:
            self.validator.validate("training_sample", sample)
        except ValidationError as exc:  # e.g. an output past the sample's length limits
            log.warning("no training sample from %s: %s", sample["source_trace_id"], exc)
            return []
        return [(sample["sample_id"].encode(), orjson.dumps(sample))]
