"""Training samples derived from comparisons (Contract → Training samples).

`samples` holds the rule (tiers by `winner.score`, the deterministic `sample_id`), with no
broker; `deriver` is the worker's reader of the comparison topic that publishes the samples
in the checkpoint's transaction.
"""

from streams.training.samples import SAMPLE_NAMESPACE, derive_sample, sample_id, tier_of

__all__ = ["SAMPLE_NAMESPACE", "derive_sample", "sample_id", "tier_of"]
