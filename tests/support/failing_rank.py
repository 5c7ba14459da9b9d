"""Runs the command line with a fault injected on one process (for the multi-process tests).

    accelerate launch ... tests/support/failing_rank.py <rank> <step> replay cfg.json

The process of rank <rank> raises at global batch <step> of epoch 1; everything else is the
product's own code path.
"""

import os
import sys

import engine.run.step
import engine.run.train

RANK, AT = int(sys.argv[1]), int(sys.argv[2])
real_batch_loss = engine.run.step.batch_loss


def faulty_batch_loss(inputs, batch, epoch, index):
    if int(os.environ.get("RANK", "0")) == RANK and index == AT:
        raise RuntimeError(f"injected fault on rank {RANK} at batch {AT}")
    return real_batch_loss(inputs, batch, epoch, index)


engine.run.train.batch_loss = faulty_batch_loss  # the loop's own reference to the step

from wizard.app import main  # noqa: E402

sys.exit(main(sys.argv[3:]))
