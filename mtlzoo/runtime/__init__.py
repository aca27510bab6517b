"""The runtime: the multi-task model, the data pipeline, training, checkpoints, distribution."""
