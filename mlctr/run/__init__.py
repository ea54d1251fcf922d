"""The run machinery: the trainer (train), its dataset (inputs), logs, errors,
per-peer schedule, evaluation, checkpoints and TensorBoard summaries."""
