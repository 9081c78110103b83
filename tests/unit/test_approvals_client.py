"""The command's side of the approvals API: each request signed with SigV4, each answer read."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cloud_sniper.approvals import ApprovalError, ApprovalsApi, region_of

CREDENTIALS = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "tok")
REGION = "eu-west-1"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A loopback HTTP server standing in for API Gateway: it keeps what it received."""

    received: list[Received] = field(default_factory=list)
    status: int = 200
    answer: Any = field(default_factory=lambda: {"approval_id": "apr-1", "status": "approved"})
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.received.append(
                Received(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
            )
            body = json.dumps(state.answer).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _record

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def signature_of(received: Received, url: str) -> str:
    """Sign again what the server received, with the headers the request said it signed."""
    authorization = received.headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {name: value for name, value in received.headers.items() if name.lower() in signed}
    request = AWSRequest(method=received.method, url=url, data=received.body, headers=headers)
    request.context["timestamp"] = received.headers["X-Amz-Date"]
    auth = SigV4Auth(CREDENTIALS, "execute-api", REGION)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


def test_an_answer_is_a_sigv4_signed_post_for_execute_api(server):
    # Given the API at a loopback URL
    api = ApprovalsApi(server.url, CREDENTIALS, REGION)

    # When an approval is approved
    answered = api.approve("apr-0123456789", "known scanner")

    # Then the server got one POST on the approval's path, with the reason as its JSON body
    (received,) = server.received
    assert answered == server.answer
    assert (received.method, received.path) == ("POST", "/v1/approvals/apr-0123456789/approve")
    assert json.loads(received.body) == {"reason": "known scanner"}
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["Host"] == f"127.0.0.1:{server.port}"

    # And it is signed with SigV4 for execute-api in the API's region, by the caller's key, over
    # the host, the date and the session token
    authorization = received.headers["Authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{received.headers['X-Amz-Date'][:8]}"
        f"/{REGION}/execute-api/aws4_request, SignedHeaders="
    )
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token", "content-type"} <= set(signed)
    assert received.headers["X-Amz-Security-Token"] == "tok"

    # And the signature is the one SigV4 gives for exactly what arrived
    url = f"http://127.0.0.1:{server.port}/v1/approvals/apr-0123456789/approve"
    assert authorization.endswith(f"Signature={signature_of(received, url)}")


def test_a_listing_signs_its_query_too(server):
    server.answer = {"approvals": [{"approval_id": "apr-1"}]}
    api = ApprovalsApi(server.url, CREDENTIALS, REGION)

    assert api.list("all") == [{"approval_id": "apr-1"}]

    (received,) = server.received
    assert (received.method, received.path) == ("GET", "/v1/approvals?status=all")
    url = f"http://127.0.0.1:{server.port}/v1/approvals?status=all"
    assert received.headers["Authorization"].endswith(f"Signature={signature_of(received, url)}")
    # A query signed as another would be refused by API Gateway: the test would see it
    other = f"http://127.0.0.1:{server.port}/v1/approvals?status=pending"
    assert not received.headers["Authorization"].endswith(
        f"Signature={signature_of(received, other)}"
    )


def test_an_approval_id_is_one_path_segment(server):
    ApprovalsApi(server.url, CREDENTIALS, REGION).get("apr-1/approve")

    assert server.received[0].path == "/v1/approvals/apr-1%2Fapprove"


def test_a_refusal_is_an_error_with_the_apis_message_and_status(server):
    server.status, server.answer = 409, {"message": "approval apr-1 was already answered"}

    with pytest.raises(ApprovalError) as refused:
        ApprovalsApi(server.url, CREDENTIALS, REGION).deny("apr-1", "late")

    assert str(refused.value) == "approval apr-1 was already answered"
    assert refused.value.status == 409


def test_an_api_that_cannot_be_reached_says_where_it_was_sought():
    api = ApprovalsApi("http://127.0.0.1:9/v1/", CREDENTIALS, REGION, timeout=2)

    with pytest.raises(ApprovalError, match=r"the approvals API at http://127\.0\.0\.1:9/v1/ "):
        api.list()


@pytest.mark.parametrize(
    ("url", "region"),
    [
        ("https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/", "eu-west-1"),
        ("https://a1b2c3d4e5.execute-api.cn-north-1.amazonaws.com.cn/v1/", "cn-north-1"),
        ("http://127.0.0.1:4566/a1b2c3d4e5/v1/", None),
        ("https://approvals.example.com/", None),
    ],
)
def test_the_region_is_read_from_an_api_gateway_url(url, region):
    assert region_of(url) == region
