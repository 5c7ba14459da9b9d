"""Base models: the built-in demo model, offline loading of real checkpoints, family detection."""
