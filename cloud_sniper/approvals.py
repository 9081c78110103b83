"""The approvals API as a person's tools call it: requests signed with SigV4, answers as JSON.

Runs outside Lambda (the CLI, the local demo, the tests). The service behind the API
(services/approvals) records who answered and resumes the waiting execution; this side only
finds the API, signs each request with the caller's credentials and reads the answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.httpsession import URLLib3Session

from cloud_sniper.domain import naming

SERVICE = "execute-api"
# https://<api id>.execute-api.<region>.amazonaws.com/<stage>/
_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


class ApprovalError(Exception):
    """The API refused or could not be reached: the message says why, `status` the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApprovalsApi:
    """The approvals API at one URL, called with one principal's credentials."""

    url: str
    credentials: Credentials | ReadOnlyCredentials
    region: str
    timeout: float = 30.0

    def list(self, status: str = "pending") -> list[dict[str, Any]]:
        """The approvals with this status (pending, approved, denied, timed_out or all)."""
        return self.send("GET", "approvals", query={"status": status})["approvals"]

    def get(self, approval_id: str) -> dict[str, Any]:
        """One approval, with its request and its answer."""
        return self.send("GET", f"approvals/{quote(approval_id, safe='')}")

    def approve(self, approval_id: str, reason: str) -> dict[str, Any]:
        """Approve; the execution resumes and acts. Returns the answered approval."""
        return self._answer(approval_id, "approve", reason)

    def deny(self, approval_id: str, reason: str) -> dict[str, Any]:
        """Deny; the execution resumes and reports the denial. Returns the answered approval."""
        return self._answer(approval_id, "deny", reason)

    def _answer(self, approval_id: str, verdict: str, reason: str) -> dict[str, Any]:
        path = f"approvals/{quote(approval_id, safe='')}/{verdict}"
        return self.send("POST", path, body={"reason": reason})

    def send(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """Sign one request with SigV4 for execute-api, send it, and read its JSON answer."""
        request = self.signed(method, path, query, body)
        try:
            response = URLLib3Session(timeout=self.timeout).send(request.prepare())
        except BotoCoreError as exc:
            raise ApprovalError(
                f"the approvals API at {self.url} cannot be reached: {exc}"
            ) from exc

        text = response.content.decode("utf-8", "replace")
        try:
            document = json.loads(text) if text else {}
        except ValueError:
            document = {"message": text[:300]}
        if response.status_code >= 400:
            message = document.get("message") if isinstance(document, dict) else None
            raise ApprovalError(
                message or f"the approvals API answered {response.status_code}",
                response.status_code,
            )
        return document

    def signed(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> AWSRequest:
        """The request as it is sent: its Authorization header signs it for this principal."""
        url = self.url.rstrip("/") + "/" + path.lstrip("/")
        if query:
            url += "?" + urlencode(query)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        SigV4Auth(self.credentials, SERVICE, self.region).add_auth(request)
        return request


def local_api(clients: Callable[[str], Any]) -> ApprovalsApi:
    """The local account's approvals API, by its stack's output, signed as the local caller."""
    from cloud_sniper.local.runtime import LOCAL_CREDENTIALS, REGION

    url = api_url_from_stack(clients("cloudformation"))
    credentials = Credentials(
        LOCAL_CREDENTIALS["aws_access_key_id"], LOCAL_CREDENTIALS["aws_secret_access_key"]
    )
    return ApprovalsApi(url, credentials, REGION)


def api_url_from_stack(cloudformation: Any, stack_name: str = naming.APPROVALS_API_STACK) -> str:
    """The approvals API's URL, as its stack's output holds it."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        raise ApprovalError(
            f"stack {stack_name} cannot be read ({message}): deploy it "
            f"(`cdk deploy {naming.APPROVALS_API_STACK}`), or give the URL with --api-url"
        ) from exc
    except BotoCoreError as exc:
        raise ApprovalError(f"stack {stack_name} cannot be read: {exc}") from exc
    outputs = {
        output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])
    }
    url = outputs.get(naming.APPROVALS_API_URL_OUTPUT)
    if not url:
        raise ApprovalError(
            f"stack {stack_name} has no output {naming.APPROVALS_API_URL_OUTPUT}: is it the "
            "approvals stack?"
        )
    return url


def region_of(url: str) -> str | None:
    """The region in an API Gateway URL's host, if the URL is one."""
    match = _API_HOST.match(urlsplit(url).hostname or "")
    return match["region"] if match else None
