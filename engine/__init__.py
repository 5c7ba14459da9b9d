"""lora-wizard's training engine: config, dataset, models, network, training loop. Never imports the UI."""
