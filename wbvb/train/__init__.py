"""Training: the loop with checkpoints and logging (trainer), the student with its projectors and
loss assembly (student), run setup (setup), the losses (losses, kd, alignment) and evaluation."""
