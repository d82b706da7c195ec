"""The run directory: every name in a work dir, the features shard format, resume, the
lock, storage, and the one reader of a finished run."""
