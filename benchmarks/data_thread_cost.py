"""What a trial's data path costs the training thread, piece by piece, without the trial around it.

The bare loop of ``trainer_throughput.py`` (``bare_loop``: the quickstart student, forward, task +
top-k KD loss, backward, clip, AdamW, one torch thread) is fed the same batches from different sources, the
sources alternating within each round:

- ``list``: the decoded batches, already in memory (the reference);
- ``readahead``: the same in-memory batches through the trial's read-ahead thread (``prefetch``);
- ``decode``: batch cuts + decode (``batch_tables`` + ``decode_batch``) of Ray Data's blocks,
  read into memory beforehand, in the read-ahead thread, as a trial does;
- ``decode_unused``: the same work in that thread, but the loop trains on the in-memory batches
  (the cost of doing the work, apart from the batches it makes);
- ``stream``: the ShardStream as a trial reads it: Ray Data, batch cuts + decode and read-ahead in
  its batch-making task (another process), the loop taking ready batches from the object store;
- ``stream_in_process``: the same pipeline in this process (``local_batches``) behind the
  read-ahead thread, as trials ran it before the batch-making process.

Per source: loop seconds (median over rounds, and each round), the training thread's CPU seconds,
the wall time it spent off a CPU (loop − CPU: waiting for the GIL or for a batch, or descheduled),
the part of it spent waiting for the first batch, and the ratio list / source. On a quiet machine
a source that costs nothing has a ratio near 1.

python benchmarks/data_thread_cost.py [--rows-per-task 2000] [--epochs 3] [--rounds 3] [--sources list,decode,...]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from trainer_throughput import bare_loop, quickstart_store  # this folder is on sys.path when run as a script

SOURCES = ("list", "readahead", "decode", "decode_unused", "stream", "stream_in_process")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows-per-task", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sources", default=",".join(SOURCES))
    args = ap.parse_args()
    sources = args.sources.split(",")
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        ap.error(f"unknown sources {unknown}; choose from {', '.join(SOURCES)}")

    import ray

    from wbvb.distill_types import DISTILL
    from wbvb.models.load import load_model
    from wbvb.feed.prefetch import prefetch
    from wbvb.feed.shuffle import batch_tables, epoch_order
    from wbvb.feed.stream import ShardStream
    from wbvb.store.codec import decode_batch

    cfg, prep, _ = quickstart_store(args.rows_per_task, args.epochs, "wbvb-bench-dt-")
    stream = ShardStream(prep.data_dir, prep.manifest, DISTILL["black_box"].signals, cfg.training.batch_size,
                         cfg.sweep.data_cpus, cfg.sweep.stall_timeout_s)
    index = stream.index()
    orders = [epoch_order(index.example_ids, 0, epoch) for epoch in range(args.epochs)]
    blocks = list(stream._tables(index, orders))  # Ray Data's blocks of all epochs, in memory

    def decoded():
        """The trial's batches (``ShardStream.batches``' cuts and decoding) from the blocks in memory."""
        for _, table in batch_tables(iter(blocks), [len(o) for o in orders], stream.batch_size):
            yield decode_batch(table, stream.manifest, stream.pad_id)

    in_memory = list(decoded())  # the same batches as the stream's, without reading the shards again

    def feed(source: str):
        if source == "list":
            return iter(in_memory)
        if source == "readahead":
            return prefetch(iter(in_memory), depth=2)
        if source == "decode":
            return prefetch(decoded(), depth=2)
        if source == "decode_unused":
            return (b for _, b in zip(prefetch(decoded(), depth=2), in_memory))
        if source == "stream":  # the batch-making task starts here
            return (b for _, b in stream.batches(0, args.epochs, 0))
        return (b for _, b in prefetch(stream.local_batches(0, args.epochs, 0), depth=2))

    def counted(batches, steps: list, first_wait: list):
        """The batches, counted; the wait for the first one (from the loop's start) noted."""
        t = time.perf_counter()
        for b in batches:
            if not steps:
                first_wait.append(time.perf_counter() - t)
            steps.append(1)
            yield b

    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in sources}
    first_waits: dict[str, list[float]] = {s: [] for s in sources}
    for _ in range(args.rounds):
        for source in sources:
            steps: list = []
            batches = counted(feed(source), steps, first_waits[source])
            wall, _, cpu = bare_loop(load_model(prep.student_path), [batches], cfg.training.lr,
                                     cfg.training.grad_clip, cfg.loss.beta, cfg.loss.temperature)
            if len(steps) != len(in_memory):
                raise RuntimeError(f"{source} gave {len(steps)} batches, expected {len(in_memory)}")
            runs[source].append((wall, cpu))
    ray.shutdown()

    print(f"micro_batches: {len(in_memory)}")
    ref = statistics.median(w for w, _ in runs["list"]) if "list" in runs else None
    for source in sources:
        walls = [w for w, _ in runs[source]]
        cpus = [c for _, c in runs[source]]
        print(f"{source}_loop_s: {statistics.median(walls):.2f} (runs: {', '.join(f'{w:.2f}' for w in walls)})")
        print(f"{source}_thread_cpu_s: {statistics.median(cpus):.2f}")
        print(f"{source}_off_cpu_s: {statistics.median(w - c for w, c in runs[source]):.2f}")
        print(f"{source}_first_batch_wait_s: {statistics.median(first_waits[source]):.2f}")
        if ref is not None and source != "list":
            print(f"list_vs_{source}_ratio: {ref / statistics.median(walls):.3f}")
    print(f"load_average_1min_at_end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
