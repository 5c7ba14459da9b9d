"""Runs in order: preflight of every run before the first starts, the journal that survives a
crash, and the runner that trains one planned run into its own run<N>/ folder."""
