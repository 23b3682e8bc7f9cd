"""Training: the optimizer and learning-rate schedules (`optimizer`), the train state, its
shardings and initialisation (`train_state`), the train step (`step`), the run's inputs
(`inputs`), the loop with evaluation and checkpointing (`loop`, what `python -m
llada_jax.train` runs) and the FLOP accounting and metric logs (`metrics`)."""
