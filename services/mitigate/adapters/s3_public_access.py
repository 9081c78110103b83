"""A bucket's public access block, and whether the bucket serves a website."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.mitigate.adapters._aws import catalogue_error, error_code
from services.mitigate.catalogue import ActionTargetNotFoundError

NO_SUCH_BUCKET = "NoSuchBucket"
NO_BLOCK = "NoSuchPublicAccessBlockConfiguration"
NO_WEBSITE = "NoSuchWebsiteConfiguration"

# The four settings of a public access block, as the S3 API names them.
SETTINGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


class S3PublicAccess:
    """Reads and writes the bucket-level public access block; never touches a bucket policy."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def public_access_block(self, bucket: str) -> dict[str, bool] | None:
        """The bucket's four settings; None when it has no public access block."""
        try:
            response = self._client.get_public_access_block(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_BLOCK:
                return None
            raise _error(exc, bucket, "GetPublicAccessBlock") from exc
        found = response.get("PublicAccessBlockConfiguration", {})
        return {setting: bool(found.get(setting, False)) for setting in SETTINGS}

    def serves_website(self, bucket: str) -> bool:
        """Whether the bucket has a static website configuration."""
        try:
            self._client.get_bucket_website(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_WEBSITE:
                return False
            raise _error(exc, bucket, "GetBucketWebsite") from exc
        return True

    def put_public_access_block(self, bucket: str, settings: dict[str, bool]) -> None:
        """Write the bucket's public access block, all four settings."""
        try:
            self._client.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={s: bool(settings.get(s)) for s in SETTINGS},
            )
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, bucket, "PutPublicAccessBlock") from exc

    def delete_public_access_block(self, bucket: str) -> None:
        """Remove the bucket's public access block."""
        try:
            self._client.delete_public_access_block(Bucket=bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _error(exc, bucket, "DeletePublicAccessBlock") from exc


def _code(exc: ClientError | BotoCoreError) -> str:
    return error_code(exc) if isinstance(exc, ClientError) else ""


def _error(exc: ClientError | BotoCoreError, bucket: str, operation: str) -> Exception:
    # A missing bucket is the target not found; other permanent failures are ActionFailedError.
    if _code(exc) == NO_SUCH_BUCKET:
        return ActionTargetNotFoundError(f"bucket {bucket} not found")
    return catalogue_error(exc, f"{operation} {bucket}")
