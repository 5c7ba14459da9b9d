"""Captions to text-encoder outputs: tokenising in 75-token chunks, (word:1.3) weights, clip skip,
and the cache of encoder outputs for runs whose text encoders are frozen."""
