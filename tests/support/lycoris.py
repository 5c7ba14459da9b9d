"""Whether the optional LyCORIS package (LoHa, LoKr) is installed: its tests skip without it."""

from __future__ import annotations

from importlib import metadata

try:
    metadata.version("lycoris-lora")
    HAVE_LYCORIS = True
except metadata.PackageNotFoundError:
    HAVE_LYCORIS = False
