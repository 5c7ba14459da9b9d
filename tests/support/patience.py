"""How long a test waits for an event (a child process to start training, a prompt to appear,
a launched run to end) before it gives up. Tests wait for the event itself; this cap only turns a
hang into a failure, so it is generous: a loaded CI machine can be ten times slower than an idle
one, and a test must not fail for that. LORA_WIZARD_TEST_PATIENCE (seconds) changes it."""

from __future__ import annotations

import os

PATIENCE = float(os.environ.get("LORA_WIZARD_TEST_PATIENCE", "600"))
