"""Close a bucket to the public: turn on all four settings of its public access block.

The bucket policy and ACLs are left as they are; the block overrides them, and the undo puts the
previous block back. A bucket that serves a static website stops serving it to the public,
which the state records for whoever weighs the blast radius.
"""

from __future__ import annotations

import re
from typing import ClassVar

from cloud_sniper.domain.models import ActionKind
from services.mitigate.adapters.s3_public_access import SETTINGS, S3PublicAccess
from services.mitigate.catalogue import (
    ActionFailedError,
    ActionRecord,
    ActionRun,
    ActionTargetNotFoundError,
    Applied,
    Clients,
    Permission,
    Verification,
    register,
)

ALL_BLOCKED = dict.fromkeys(SETTINGS, True)

# General purpose bucket names, as S3 allows them since 2018.
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def bucket_name(target: str) -> str:
    """The target as a bucket name; ActionFailedError naming it when it cannot be one."""
    if not _BUCKET_NAME.fullmatch(target) or ".." in target:
        raise ActionFailedError(f"{target!r} is not an S3 bucket name")
    return target


def fully_blocked(settings: dict[str, bool] | None) -> bool:
    """Whether a public access block has all four settings on."""
    return settings is not None and all(settings.get(setting) for setting in SETTINGS)


def describe(settings: dict[str, bool] | None) -> str:
    """A public access block in a few words: none, all four on, or which are on."""
    if settings is None:
        return "no public access block"
    on = [setting for setting in SETTINGS if settings.get(setting)]
    if len(on) == len(SETTINGS):
        return "all four settings on"
    return f"{', '.join(on)} on" if on else "all four settings off"


@register
class BlockPublicAccess:
    """Turn on the bucket's public access block, after recording the one it had."""

    kind: ClassVar[ActionKind] = ActionKind.BLOCK_PUBLIC_ACCESS
    summary: ClassVar[str] = (
        "turn on all four settings of a bucket's public access block; its policy is untouched"
    )
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission(
            actions=[
                # GetPublicAccessBlock; PutPublicAccessBlock and DeletePublicAccessBlock both
                # take s3:PutBucketPublicAccessBlock.
                "s3:GetBucketPublicAccessBlock",
                "s3:PutBucketPublicAccessBlock",
                "s3:GetBucketWebsite",
            ],
            resources=["arn:{partition}:s3:::*"],
            reason="the bucket is named by the finding, known only at run time; only its public "
            "access block is written, never its policy",
        ),
    )
    expires: ClassVar[bool] = False

    def plan(self, run: ActionRun) -> str:
        try:
            bucket = bucket_name(run.action.target)
        except ActionFailedError as exc:
            return f"refuse: {exc}"
        return f"turn on all four public access block settings of bucket {bucket}"

    def apply(self, run: ActionRun) -> Applied:
        bucket = bucket_name(run.action.target)
        s3 = S3PublicAccess(run.clients("s3"))
        previous = s3.public_access_block(bucket)
        website = s3.serves_website(bucket)

        # A block already whole (a person's, or ours from a run that crashed before recording)
        # is recorded as found: the undo then leaves the bucket closed.
        if fully_blocked(previous):
            detail = f"bucket {bucket} already had {describe(previous)}"
        else:
            s3.put_public_access_block(bucket, ALL_BLOCKED)
            detail = f"blocked public access to bucket {bucket} (before: {describe(previous)})"
        if website:
            detail += "; it serves a static website, no longer public"
        return Applied(detail=detail, state={"previous": previous, "serves_website": website})

    def verify(self, record: ActionRecord, clients: Clients) -> Verification:
        s3 = S3PublicAccess(clients("s3"))
        try:
            settings = s3.public_access_block(record.target)
        except ActionTargetNotFoundError:
            return Verification(ok=True, detail=f"bucket {record.target} no longer exists")
        return Verification(
            ok=fully_blocked(settings), detail=f"bucket {record.target} has {describe(settings)}"
        )

    def undo(self, record: ActionRecord, clients: Clients) -> str:
        s3 = S3PublicAccess(clients("s3"))
        previous = record.state.get("previous")
        if fully_blocked(previous):
            return f"bucket {record.target} was fully blocked before; left as it was"
        try:
            if previous is None:
                s3.delete_public_access_block(record.target)
            else:
                s3.put_public_access_block(record.target, previous)
        except ActionTargetNotFoundError:
            return f"bucket {record.target} no longer exists; nothing to put back"
        if previous is None:
            return f"removed the public access block of bucket {record.target}, which had none"
        return f"put back {describe(previous)} on bucket {record.target}"
