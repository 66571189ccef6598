"""S3-compatible object storage output: the same layout and the same fenced exactly-once
contract as the filesystem (sinks/files/), with conditional writes for fences.

- `location.py`: `s3://bucket/prefix` as a value (`S3Location`), beside `Path`;
- `store.py`: the client (boto3, the standard AWS credential chain) and its errors;
- `listing.py`: finished objects of a channel, by time bucket (the readers' side);
- `part_objects.py`: one partition's writer: a local spool, a hidden pack per checkpoint,
  published objects that are never rewritten;
- `packs.py`: the format of a pack (a checkpoint's bytes of all of a partition's files);
- `retention.py`: old buckets' objects deleted.
"""
