"""The emulated account's REST APIs, served on loopback and answered by the functions in-process.

moto keeps an API's resources and methods but runs no Lambda integration, and its CloudFormation
skips the stage. Here the routes come from the deployed templates themselves (resources,
methods with their authorization and their Lambda proxy integration, stages): a request is
matched to its method, turned into the API Gateway REST proxy event the function would receive,
and the function's answer is sent back as API Gateway would.

AWS_IAM methods need a SigV4-signed request, as in AWS. The caller's identity comes from the
signature's access key, asked of the emulated account's STS (GetCallerIdentity); the signature
itself is not checked, as the emulation accepts any credentials.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
REST_API = "AWS::ApiGateway::RestApi"
METHOD = "AWS::ApiGateway::Method"
RESOURCE = "AWS::ApiGateway::Resource"
STAGE = "AWS::ApiGateway::Stage"
FUNCTION = "AWS::Lambda::Function"

# What API Gateway answers a request for no method, or one without a signature.
MISSING_TOKEN = (403, {"message": "Missing Authentication Token"})
INTERNAL_ERROR = (502, {"message": "Internal server error"})

_CREDENTIAL = re.compile(
    r"Credential=(?P<key>[^/,\s]+)/[^/]+/(?P<region>[^/]+)/(?P<service>[^/]+)/"
)
# moto names its default caller (any key it does not know) arn:aws:sts::ACCOUNT:user/moto; IAM
# would name that user arn:aws:iam::ACCOUNT:user/moto, as the approvers group holds it.
_MOTO_DEFAULT_USER = re.compile(
    r"^arn:(?P<partition>[^:]+):sts::(?P<account>\d{12}):user/(?P<name>.+)$"
)


@dataclass(frozen=True)
class Route:
    """One method of a REST API: where it is, who may call it, which function answers."""

    api_id: str
    stage: str
    http_method: str
    resource_path: str  # as API Gateway names it: /approvals/{id}
    authorization: str
    function_name: str

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when the request is for this method, else None."""
        if self.http_method not in (method, "ANY"):
            return None
        expected = self.resource_path.strip("/").split("/")
        given = path.strip("/").split("/")
        if len(expected) != len(given):
            return None
        parameters = {}
        for part, value in zip(expected, given, strict=True):
            if part.startswith("{") and part.endswith("}"):
                if not value:
                    return None
                parameters[part[1:-1]] = unquote(value)
            elif part != value:
                return None
        return parameters


@dataclass
class Request:
    method: str
    target: str  # the path and query, as sent
    headers: dict[str, str]
    body: bytes
    source_ip: str = HOST


def routes_of(stacks: list[Any]) -> list[Route]:
    """Every Lambda proxy method of the deployed stacks' REST APIs."""
    routes = []
    for stack in stacks:
        resources = stack.template.get("Resources", {})
        for logical_id, method in resources.items():
            if method.get("Type") != METHOD:
                continue
            properties = method["Properties"]
            integration = properties.get("Integration", {})
            function = _function_of(integration.get("Uri"), resources)
            api = _logical_id(properties.get("RestApiId"))
            if integration.get("Type") != "AWS_PROXY" or function is None or api is None:
                logger.info("method not served locally: %s", logical_id)
                continue
            path = _path_of(properties.get("ResourceId"), resources)
            api_id = stack.physical_ids.get(api, api)
            for stage in _stages_of(api, resources):
                routes.append(
                    Route(
                        api_id=api_id,
                        stage=stage,
                        http_method=properties["HttpMethod"],
                        resource_path=path,
                        authorization=properties.get("AuthorizationType", "NONE"),
                        function_name=function,
                    )
                )
    return routes


def local_outputs(template: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The template with each output of a REST API stage's URL pointing at the local server.

    The URL keeps the API's id (resolved when the stack is created) and the stage:
    <base_url>/<api id>/<stage>/.
    """
    resources = template.get("Resources", {})
    outputs = dict(template.get("Outputs", {}))
    for key, output in outputs.items():
        value = output.get("Value")
        parts = value.get("Fn::Join", ["", []])[1] if isinstance(value, dict) else []
        if ".execute-api." not in [part for part in parts if isinstance(part, str)]:
            continue
        api = next((p["Ref"] for p in parts if _type_of(p, resources) == REST_API), None)
        stage = next((p["Ref"] for p in parts if _type_of(p, resources) == STAGE), None)
        if api is None or stage is None:
            continue
        stage_name = resources[stage]["Properties"]["StageName"]
        url = {"Fn::Join": ["", [f"{base_url.rstrip('/')}/", {"Ref": api}, f"/{stage_name}/"]]}
        outputs[key] = {**output, "Value": url}
    return {**template, "Outputs": outputs} if outputs else template


class LocalApiGateway:
    """Answers requests to the REST APIs' routes with the functions, as API Gateway does."""

    def __init__(self, clients: Any, account: str, region: str) -> None:
        self._clients = clients
        self._account = account
        self._region = region
        self.routes: list[Route] = []

    def handle(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request: the status, headers and body to answer with."""
        request_id = str(uuid.uuid4())
        split = urlsplit(request.target)
        parts = split.path.strip("/").split("/", 2)
        if len(parts) < 2:
            return _error(*MISSING_TOKEN, request_id)
        api_id, stage, rest = parts[0], parts[1], "/" + (parts[2] if len(parts) > 2 else "")
        for route in self.routes:
            if (route.api_id, route.stage) != (api_id, stage):
                continue
            parameters = route.match(request.method, rest)
            if parameters is not None:
                return self._invoke(route, request, rest, split.query, parameters, request_id)
        return _error(*MISSING_TOKEN, request_id)

    def _invoke(
        self,
        route: Route,
        request: Request,
        path: str,
        query: str,
        parameters: dict[str, str],
        request_id: str,
    ) -> tuple[int, dict[str, str], bytes]:
        identity: dict[str, Any] = {"sourceIp": request.source_ip}
        identity["userAgent"] = _header(request.headers, "User-Agent")
        if route.authorization == "AWS_IAM":
            signed = self._signer(request.headers)
            if isinstance(signed, tuple):
                return _error(*signed, request_id)
            identity.update(signed)

        event = proxy_event(
            route, request, path, query, parameters, identity, self._account, request_id
        )
        response = self._clients("lambda").invoke(
            FunctionName=route.function_name, Payload=json.dumps(event).encode()
        )
        payload = response["Payload"].read()
        if response.get("FunctionError"):
            logger.warning("api function failed: %s %s", route.function_name, payload[:500])
            return _error(*INTERNAL_ERROR, request_id)
        try:
            return _proxy_result(json.loads(payload), request_id)
        except (ValueError, KeyError, TypeError):
            logger.warning("api function answered no proxy result: %s", route.function_name)
            return _error(*INTERNAL_ERROR, request_id)

    def _signer(self, headers: dict[str, str]) -> dict[str, Any] | tuple[int, dict[str, str]]:
        """The identity of the request's SigV4 signer, or API Gateway's refusal."""
        authorization = _header(headers, "Authorization") or ""
        match = _CREDENTIAL.search(authorization)
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or match is None:
            return MISSING_TOKEN
        if match["service"] != "execute-api":
            message = "Credential should be scoped to correct service: 'execute-api'. "
            return 403, {"message": message}
        # A session of its own: requests are served on several threads at once.
        sts = boto3.session.Session().client(
            "sts",
            region_name=self._region,
            aws_access_key_id=match["key"],
            aws_secret_access_key="not-checked-locally",
            aws_session_token=_header(headers, "X-Amz-Security-Token"),
        )
        caller = sts.get_caller_identity()
        arn = caller["Arn"]
        default_user = _MOTO_DEFAULT_USER.match(arn)
        if default_user:
            arn = f"arn:{default_user['partition']}:iam::{default_user['account']}:user/"
            arn += default_user["name"]
        return {
            "accessKey": match["key"],
            "accountId": caller["Account"],
            "caller": caller["UserId"],
            "user": caller["UserId"],
            "userArn": arn,
        }


def proxy_event(
    route: Route,
    request: Request,
    path: str,
    query: str,
    parameters: dict[str, str],
    identity: dict[str, Any],
    account: str,
    request_id: str,
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload 1.0) of a request to a route."""
    values = parse_qs(query, keep_blank_values=True)
    headers = {name: value for name, value in request.headers.items()}
    body = request.body.decode() if request.body else None
    now = time.time()
    return {
        "resource": route.resource_path,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": {name: [value] for name, value in headers.items()} or None,
        "queryStringParameters": {k: v[-1] for k, v in values.items()} or None,
        "multiValueQueryStringParameters": values or None,
        "pathParameters": parameters or None,
        "stageVariables": None,
        "requestContext": {
            "accountId": account,
            "apiId": route.api_id,
            "stage": route.stage,
            "requestId": request_id,
            "resourcePath": route.resource_path,
            "httpMethod": request.method,
            "path": f"/{route.stage}{path}",
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": int(now * 1000),
            "domainName": _header(request.headers, "Host") or HOST,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "user": None,
                "userArn": None,
                "cognitoIdentityPoolId": None,
                "cognitoIdentityId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "sourceIp": HOST,
                "userAgent": None,
                **identity,
            },
        },
        "body": body,
        "isBase64Encoded": False,
    }


@dataclass
class ApiServer:
    """The local REST APIs on a loopback port, one thread per request."""

    gateway: LocalApiGateway
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        assert self._server is not None, "the API server is not started"
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> ApiServer:
        gateway = self.gateway

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    method=self.command,
                    target=self.path,
                    headers=dict(self.headers.items()),
                    body=self.rfile.read(length) if length else b"",
                    source_ip=self.client_address[0],
                )
                try:
                    status, headers, body = gateway.handle(request)
                except Exception:  # a request never takes the server down
                    logger.exception("local api request failed")
                    status, headers, body = _error(*INTERNAL_ERROR, str(uuid.uuid4()))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("local api: " + format, *args)

        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="local-api", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _proxy_result(result: dict[str, Any], request_id: str) -> tuple[int, dict[str, str], bytes]:
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[str(name)] = ", ".join(str(value) for value in values)
    headers["x-amzn-RequestId"] = request_id
    body = result.get("body") or ""
    if result.get("isBase64Encoded"):
        return int(result["statusCode"]), headers, base64.b64decode(body)
    return int(result["statusCode"]), headers, body.encode()


def _error(
    status: int, document: dict[str, str], request_id: str
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", "x-amzn-RequestId": request_id}
    return status, headers, json.dumps(document).encode()


def _header(headers: dict[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _logical_id(reference: Any) -> str | None:
    if isinstance(reference, dict):
        if "Ref" in reference:
            return reference["Ref"]
        if "Fn::GetAtt" in reference:
            return reference["Fn::GetAtt"][0]
    return None


def _type_of(part: Any, resources: dict[str, Any]) -> str | None:
    logical_id = _logical_id(part) if isinstance(part, dict) and "Ref" in part else None
    return resources.get(logical_id, {}).get("Type") if logical_id else None


def _path_of(reference: Any, resources: dict[str, Any]) -> str:
    """The resource path of a method's resource: its path parts up to the API's root."""
    if isinstance(reference, dict) and "Fn::GetAtt" in reference:
        return "/"  # the API's root resource
    parts = []
    logical_id = _logical_id(reference)
    while logical_id in resources and resources[logical_id]["Type"] == RESOURCE:
        properties = resources[logical_id]["Properties"]
        parts.append(properties["PathPart"])
        logical_id = _logical_id(properties["ParentId"])
    return "/" + "/".join(reversed(parts))


def _stages_of(api: str, resources: dict[str, Any]) -> list[str]:
    return [
        resource["Properties"]["StageName"]
        for resource in resources.values()
        if resource.get("Type") == STAGE
        and _logical_id(resource["Properties"].get("RestApiId")) == api
    ]


def _function_of(uri: Any, resources: dict[str, Any]) -> str | None:
    """The name of the function a Lambda integration's URI invokes."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            target = node.get("Fn::GetAtt")
            if isinstance(target, list) and resources.get(target[0], {}).get("Type") == FUNCTION:
                found.append(resources[target[0]]["Properties"]["FunctionName"])
            for value in node.values():
                visit(value)

    visit(uri)
    return found[0] if found else None
