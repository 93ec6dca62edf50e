"""Models: loading teacher and student (hub id, local folder or preset) with the tokenizer check
(load), the tiny local presets (presets), and capture of mapped blocks' hidden states and
attention maps without touching model code (capture)."""
