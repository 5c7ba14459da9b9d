"""The dataset as training sees it: folders and captions, buckets, the run's plan (exact step
count), the dataset lint, and the images encoded to latents (in memory or cached on disk)."""
