"""The report service's Security Hub side: BatchUpdateFindings on the incident's finding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.report.security_hub import FindingUpdate, SecurityHubError

# Short: the report is written before this call, and the call must leave the function time.
CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"}
)


@dataclass(frozen=True)
class Unprocessed:
    """A finding BatchUpdateFindings did not update, with Security Hub's reason."""

    id: str
    error_code: str
    error_message: str


def securityhub_client() -> Any:
    """A Security Hub client with short timeouts, created on first use."""
    return boto3.client("securityhub", config=CLIENT_CONFIG)


class SecurityHubFindings:
    """The findings Security Hub holds, updated by their customer fields only."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def update(self, update: FindingUpdate) -> list[Unprocessed]:
        """Set the finding's workflow status and note; return what Security Hub left undone."""
        try:
            response = self._client.batch_update_findings(**update.request())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SecurityHubError(
                f"BatchUpdateFindings: {error.get('Code', '')}: {error.get('Message', '')}"
            ) from exc
        except BotoCoreError as exc:
            raise SecurityHubError(f"BatchUpdateFindings: {exc}") from exc
        return [
            Unprocessed(
                id=item.get("FindingIdentifier", {}).get("Id", ""),
                error_code=item.get("ErrorCode", ""),
                error_message=item.get("ErrorMessage", ""),
            )
            for item in response.get("UnprocessedFindings") or []
        ]
