"""The sweep stage: ``python -m wbvb.sweep`` (cli), its driver (run), the Tune trial (trial),
resuming a run folder (resume) and where a run's files live (run_storage)."""
