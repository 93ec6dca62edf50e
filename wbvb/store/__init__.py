"""The teacher-store format, shared by the stage that writes it and the trials that read it:
schema and manifest, codec and compression of tensors, the shard writer, verify and inspect,
the teacher's seq_kd answers, and synthetic teacher tensors for tests and benchmarks."""
