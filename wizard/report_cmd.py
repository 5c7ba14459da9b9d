"""`--no-report` on demo, replay and queue: no contact sheet after each run (engine/report). The
sheet loads the model again and renders prompts x (1 + 2 x saved files) images, minutes on an SDXL
night of many epochs; leaving it out saves those minutes."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-report", action="store_true",
        help="no contact sheet (<name>-report.html/.png: every saved LoRA at strengths 0, 0.5, 1, the loss curve) after each run",
    )


def wanted(args) -> bool:
    return not getattr(args, "no_report", False)
