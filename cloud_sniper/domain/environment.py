"""A function's settings, read from its environment at cold start."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, ValidationError


class FunctionSettings(BaseModel):
    """Settings a Lambda function reads from its environment variables, by their aliases."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Self:
        """Validate the environment; the error names the variables at fault and why."""
        try:
            return cls.model_validate(dict(environ))
        except ValidationError as exc:
            problems = "; ".join(
                f"{error['loc'][0]}: {error['msg']}" for error in exc.errors(include_url=False)
            )
            raise ValueError(f"invalid or missing environment variables: {problems}") from exc
