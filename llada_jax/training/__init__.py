"""Training: the optimizer and train step (`step`), the run's inputs (`inputs`), the loop
with evaluation and checkpointing (`loop`, what `python -m llada_jax.train` runs) and
the FLOP accounting and metric logs (`metrics`)."""
