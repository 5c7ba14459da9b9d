"""One training run: set up once (setup), then the loop (train) of steps (step) with its saves,
states, samples and logs; the optimizer, the LR schedule, the noise and the loss."""
