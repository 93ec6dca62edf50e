"""The teacher stage (``python -m wbvb.teacher``): fine-tune the teacher, generate its signals and
answers into a store, and verify it (prepare); on a cluster, as a Ray task (cluster)."""
