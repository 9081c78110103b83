"""The local API gateway: a signed request becomes the proxy event, the signer its identity."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto import mock_aws

from cloud_sniper.local.api import LocalApiGateway, Request, Route

ACCOUNT = "123456789012"
ROUTES = [
    Route("a1b2c3", "v1", "GET", "/approvals", "AWS_IAM", "cloud-sniper-approvals"),
    Route("a1b2c3", "v1", "POST", "/approvals/{id}/approve", "AWS_IAM", "cloud-sniper-approvals"),
]


class Functions:
    """A Lambda client whose function answers as told and keeps the events it got."""

    def __init__(self, result: Any = None, error: bool = False) -> None:
        self.result = result or {"statusCode": 200, "headers": {}, "body": '{"ok": true}'}
        self.error = error
        self.events: list[dict] = []

    def invoke(self, FunctionName: str, Payload: bytes) -> dict:  # noqa: N803 - boto3's names
        self.events.append(json.loads(Payload))
        response: dict[str, Any] = {"Payload": io.BytesIO(json.dumps(self.result).encode())}
        if self.error:
            response["FunctionError"] = "Unhandled"
        return response


@pytest.fixture
def account():
    with mock_aws():
        yield boto3.client("iam", region_name="us-east-1")


def gateway(functions: Functions) -> LocalApiGateway:
    api = LocalApiGateway(lambda service: functions, ACCOUNT, "us-east-1")
    api.routes = ROUTES
    return api


def signed(method: str, target: str, key: str, secret: str, body: bytes = b"") -> Request:
    url = f"http://127.0.0.1:4567{target}"
    request = AWSRequest(method=method, url=url, data=body, headers={"User-Agent": "test"})
    SigV4Auth(Credentials(key, secret), "execute-api", "us-east-1").add_auth(request)
    headers = {name: str(value) for name, value in request.headers.items()}
    return Request(method, target, {**headers, "Host": "127.0.0.1:4567"}, body)


def test_a_signed_request_reaches_the_function_as_the_proxy_event_of_its_signer(account):
    # Given an IAM user with an access key of the emulated account
    account.create_user(UserName="alice")
    key = account.create_access_key(UserName="alice")["AccessKey"]
    functions = Functions()

    # When she sends a signed answer to the local API
    body = b'{"reason": "known scanner"}'
    request = signed(
        "POST",
        "/a1b2c3/v1/approvals/apr-1/approve",
        key["AccessKeyId"],
        key["SecretAccessKey"],
        body,
    )
    status, headers, answer = gateway(functions).handle(request)

    # Then the function got the REST proxy event of that route, with her as the identity
    assert (status, json.loads(answer)) == (200, {"ok": True})
    assert headers["x-amzn-RequestId"]
    (event,) = functions.events
    assert (event["resource"], event["path"]) == (
        "/approvals/{id}/approve",
        "/approvals/apr-1/approve",
    )
    assert event["pathParameters"] == {"id": "apr-1"}
    assert json.loads(event["body"]) == {"reason": "known scanner"}
    context = event["requestContext"]
    assert (context["accountId"], context["stage"], context["path"]) == (
        ACCOUNT,
        "v1",
        "/v1/approvals/apr-1/approve",
    )
    assert context["identity"]["userArn"] == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert context["identity"]["accessKey"] == key["AccessKeyId"]


def test_an_unknown_key_is_the_local_user_as_iam_names_it(account):
    # Given the command's local credentials, which no IAM user holds
    functions = Functions()

    # When it lists the approvals
    request = signed("GET", "/a1b2c3/v1/approvals?status=all", "local", "local")
    gateway(functions).handle(request)

    # Then the caller is moto's default user, named as IAM names a user
    (event,) = functions.events
    assert event["requestContext"]["identity"]["userArn"] == f"arn:aws:iam::{ACCOUNT}:user/moto"
    assert event["queryStringParameters"] == {"status": "all"}


@pytest.mark.parametrize(
    "target",
    ["/a1b2c3/v1/approvals/apr-1", "/a1b2c3/v2/approvals", "/other/v1/approvals", "/", "/a1b2c3"],
)
def test_a_request_for_no_method_is_refused_as_api_gateway_refuses_it(account, target):
    functions = Functions()

    status, _, answer = gateway(functions).handle(signed("GET", target, "local", "local"))

    assert (status, json.loads(answer)) == (403, {"message": "Missing Authentication Token"})
    assert functions.events == []


def test_an_unsigned_request_or_one_signed_for_another_service_is_refused(account):
    functions = Functions()
    api = gateway(functions)
    unsigned = Request("GET", "/a1b2c3/v1/approvals", {"Host": "127.0.0.1"}, b"")
    other = signed("GET", "/a1b2c3/v1/approvals", "local", "local")
    other.headers["Authorization"] = other.headers["Authorization"].replace("execute-api", "s3")

    assert api.handle(unsigned)[0] == 403
    status, _, answer = api.handle(other)
    assert status == 403
    assert "scoped to correct service: 'execute-api'" in json.loads(answer)["message"]
    assert functions.events == []


def test_a_function_that_fails_is_a_502_as_api_gateway_answers(account):
    status, _, answer = gateway(Functions(error=True)).handle(
        signed("GET", "/a1b2c3/v1/approvals", "local", "local")
    )

    assert (status, json.loads(answer)) == (502, {"message": "Internal server error"})
