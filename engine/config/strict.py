"""The base of every config section: unknown keys are errors, an empty path is refused, and the
keywords that stand for built-in inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

#: keywords that stand for the built-in demo model and the generated sample dataset
DEMO_MODEL = "builtin:demo"
SAMPLE_DATASET = "builtin:sample"


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo in a hand-edited file must not be ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_path(cls, value: Any, info: ValidationInfo) -> Any:
        # Path("") is the current folder: an empty string in a file would silently mean "here".
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, str) and not value.strip() and Path in (annotation, *get_args(annotation)):
            nullable = type(None) in get_args(annotation)
            raise ValueError(
                "an empty path would mean the current folder: write a real path" + (", or null for none" if nullable else "")
            )
        return value
