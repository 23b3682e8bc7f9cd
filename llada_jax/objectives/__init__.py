"""Training objectives: the diffusion forward process and its weighted losses (pretrain,
SFT), the autoregressive baseline, and the Monte Carlo likelihood they share."""
