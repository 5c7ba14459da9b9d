"""The GPU benchmark of the product's own training step (issue 6).

`python -m bench` builds full-size SD1.5 and SDXL architectures with random weights from the
configs the product ships (speed does not depend on the weights), trains them through the real
engine path (engine.run.setup.prepare_session, Session.batch_loss, backward, optimizer step) and
prints one row per model / text-encoder setting / batch size: samples/s, peak GPU memory, FLOPs per
sample and MFU against the bf16 matmul peak measured in the same run. `--smoke` runs the same code
on the tiny built-in demo model, on whatever device there is, in seconds.

    rows.py     what is measured: the row list and the TrainConfig of a row
    assets.py   the random-weight model folders (cached) and generated image datasets
    measure.py  clocks, the matmul peak, the timed training loop, FLOP counting, latent caching
    report.py   the text table and the JSON file
    run.py      the command line
"""
