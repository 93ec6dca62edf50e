"""The student's data feed: teacher shards -> padded batches, in a seeded order per epoch
(shard_source, shuffle, stream, batch_maker), and in-memory examples -> batches (batches)."""
