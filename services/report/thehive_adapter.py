"""The report service's TheHive side: TheHive 5's v1 API through thehive4py, its key in a secret."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError
from requests.adapters import HTTPAdapter
from thehive4py import TheHiveApi
from thehive4py.errors import TheHiveError
from thehive4py.query.filters import Eq
from thehive4py.query.sort import Asc

from services.report.thehive import TheHiveRequestError

# Each request, and the whole of one report's requests: the report must end well within the
# function's timeout however slow TheHive is.
REQUEST_TIMEOUT = (3.05, 5)
BUDGET_SECONDS = 12.0
# A secret holding JSON keeps the key under this name; any other secret is the key itself.
API_KEY_FIELD = "api_key"


class ApiKeyError(TheHiveRequestError):
    """The API key could not be read from its secret; the message names the secret and why."""


def secretsmanager_client() -> Any:
    """A Secrets Manager client, created on first use."""
    return boto3.client("secretsmanager")


def api_key_from_secret(client: Any, secret_id: str) -> str:
    """TheHive's API key from its secret: the whole string, or the "api_key" of a JSON object."""
    try:
        value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    except (ClientError, BotoCoreError) as exc:
        raise ApiKeyError(f"secret {secret_id}: {exc}") from exc
    if not isinstance(value, str) or not value.strip():
        raise ApiKeyError(f"secret {secret_id}: no text value")
    try:
        document = json.loads(value)
    except ValueError:
        return value.strip()
    if not isinstance(document, dict):
        return value.strip()
    key = document.get(API_KEY_FIELD)
    if not isinstance(key, str) or not key.strip():
        raise ApiKeyError(f'secret {secret_id}: a JSON secret without a text "{API_KEY_FIELD}"')
    return key.strip()


class _TimeoutAdapter(HTTPAdapter):
    """No retry (a retried POST could make a second case) and a timeout on every request."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class TheHiveCases:
    """TheHive's cases and what they hold, reached with an API key read on first use."""

    def __init__(
        self,
        url: str,
        api_key: Callable[[], str],
        *,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        budget_seconds: float = BUDGET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._api_key = api_key
        self._timeout = timeout
        self._budget = budget_seconds
        self._clock = clock
        self._api: TheHiveApi | None = None
        self._started = clock()

    def start(self) -> None:
        """Begin one report's requests: the time budget counts from here."""
        self._started = self._clock()

    def find_cases(self, tag: str) -> list[dict[str, Any]]:
        """The cases carrying the tag, oldest first."""
        return self._call(
            lambda api: api.case.find(filters=Eq("tags", tag), sortby=Asc("_createdAt"))
        )

    def create_case(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a case; return it as TheHive stored it."""
        return self._call(lambda api: api.case.create(case=dict(body)))

    def update_case(self, case_id: str, fields: Mapping[str, Any]) -> None:
        """Change some fields of a case."""
        self._call(lambda api: api.case.update(case_id, fields=dict(fields)))

    def observables(self, case_id: str) -> list[dict[str, Any]]:
        """The observables of a case."""
        return self._call(lambda api: api.case.find_observables(case_id))

    def add_observable(self, case_id: str, body: Mapping[str, Any]) -> None:
        """Add one observable to a case."""
        self._call(lambda api: api.case.create_observable(case_id, observable=dict(body)))

    def procedures(self, case_id: str) -> list[dict[str, Any]]:
        """The procedures (ATT&CK TTPs) of a case."""
        return self._call(lambda api: api.case.find_procedures(case_id))

    def add_procedure(self, case_id: str, body: Mapping[str, Any]) -> None:
        """Add one procedure to a case."""
        self._call(lambda api: api.case.create_procedure(case_id, procedure=dict(body)))

    def tasks(self, case_id: str) -> list[dict[str, Any]]:
        """The tasks of a case."""
        return self._call(lambda api: api.case.find_tasks(case_id))

    def add_task(self, case_id: str, body: Mapping[str, Any]) -> None:
        """Add one task to a case."""
        self._call(lambda api: api.case.create_task(case_id, task=dict(body)))

    def update_task(self, task_id: str, fields: Mapping[str, Any]) -> None:
        """Change some fields of a task."""
        self._call(lambda api: api.task.update(task_id, fields=dict(fields)))

    def _call(self, request: Callable[[TheHiveApi], Any]) -> Any:
        if self._clock() - self._started > self._budget:
            raise TheHiveRequestError(f"no time left: {self._budget:g} s spent on TheHive")
        api = self._client()
        try:
            return request(api)
        except TheHiveError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status in (401, 403):
                # A rotated key: read the secret again on the next report.
                self._api = None
            raise TheHiveRequestError(f"TheHive {status}: {exc.message}", status) from exc
        except requests.RequestException as exc:
            raise TheHiveRequestError(
                f"TheHive unreachable: {type(exc).__name__}: {exc}"[:300]
            ) from exc

    def _client(self) -> TheHiveApi:
        if self._api is None:
            api = TheHiveApi(url=self._url, apikey=self._api_key(), max_retries=0)
            adapter = _TimeoutAdapter(self._timeout)
            api.session.mount("http://", adapter)
            api.session.mount("https://", adapter)
            self._api = api
        return self._api
