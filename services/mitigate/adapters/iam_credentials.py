"""IAM, where a leaked credential is cut off: a user's access key, a role's active sessions."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from services.mitigate.adapters._aws import catalogue_error, error_code
from services.mitigate.catalogue import ActionFailedError, ActionTargetNotFoundError

NO_SUCH_ENTITY = "NoSuchEntity"
# A service-linked role: AWS owns its policies, and its sessions cannot be revoked.
UNMODIFIABLE = "UnmodifiableEntity"


class IamCredentials:
    """Reads and changes the status of access keys and the inline policies of roles."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def key_owner(self, key_id: str) -> str:
        """The IAM user an access key belongs to, as IAM says, whatever the finding named."""
        try:
            response = self._client.get_access_key_last_used(AccessKeyId=key_id)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_SUCH_ENTITY:
                raise ActionTargetNotFoundError(f"access key {key_id} not found") from exc
            raise catalogue_error(exc, f"GetAccessKeyLastUsed {key_id}") from exc
        owner = response.get("UserName")
        if not owner:
            raise ActionFailedError(f"access key {key_id}: IAM names no user owning it")
        return owner

    def key_status(self, user: str, key_id: str) -> str | None:
        """Active or Inactive; None when the user or the key no longer exists."""
        try:
            # A user holds at most two access keys: the first page has them all.
            response = self._client.list_access_keys(UserName=user)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_SUCH_ENTITY:
                return None
            raise catalogue_error(exc, f"ListAccessKeys {user}") from exc
        for key in response.get("AccessKeyMetadata", []):
            if key.get("AccessKeyId") == key_id:
                return key.get("Status")
        return None

    def set_key_status(self, user: str, key_id: str, status: str) -> bool:
        """Set an access key Active or Inactive; False when the user or the key is gone."""
        try:
            self._client.update_access_key(UserName=user, AccessKeyId=key_id, Status=status)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_SUCH_ENTITY:
                return False
            raise catalogue_error(exc, f"UpdateAccessKey {user} {key_id} {status}") from exc
        return True

    def put_role_policy(self, role: str, name: str, document: dict[str, Any]) -> None:
        """Write an inline policy of a role, replacing one of the same name."""
        try:
            self._client.put_role_policy(
                RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document)
            )
        except (ClientError, BotoCoreError) as exc:
            code = _code(exc)
            if code == NO_SUCH_ENTITY:
                raise ActionTargetNotFoundError(f"role {role} not found") from exc
            if code == UNMODIFIABLE:
                raise ActionFailedError(
                    f"role {role} is service-linked: its sessions cannot be revoked; "
                    "a person must act"
                ) from exc
            raise catalogue_error(exc, f"PutRolePolicy {role} {name}") from exc

    def role_policy(self, role: str, name: str) -> dict[str, Any] | None:
        """An inline policy of a role, as a document; None when it or the role is gone."""
        try:
            response = self._client.get_role_policy(RoleName=role, PolicyName=name)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_SUCH_ENTITY:
                return None
            raise catalogue_error(exc, f"GetRolePolicy {role} {name}") from exc
        document = response.get("PolicyDocument")
        # The API returns the document URL-encoded; boto3 decodes it, other clients may not.
        if isinstance(document, str):
            document = json.loads(unquote(document))
        return document

    def delete_role_policy(self, role: str, name: str) -> bool:
        """Delete an inline policy of a role; False when it or the role was already gone."""
        try:
            self._client.delete_role_policy(RoleName=role, PolicyName=name)
        except (ClientError, BotoCoreError) as exc:
            if _code(exc) == NO_SUCH_ENTITY:
                return False
            raise catalogue_error(exc, f"DeleteRolePolicy {role} {name}") from exc
        return True


def _code(exc: ClientError | BotoCoreError) -> str:
    return error_code(exc) if isinstance(exc, ClientError) else ""
