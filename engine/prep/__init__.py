"""Preparing a dataset before training: tagging, captioning, caption clean-up and the dataset view.

One small module per job. Like the rest of the engine, nothing here imports the UI or prints:
long jobs report through `progress.ItemProgress`, and every file they write goes through
`engine.fileio` (temporary file, then rename), with the originals kept by `backup.CaptionBackup`.
Heavy packages (onnxruntime, transformers, torch) are imported only when a model is loaded.
"""
