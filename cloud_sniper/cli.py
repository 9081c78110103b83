"""The `cloud-sniper` command: run the pipeline locally, answer approvals, inspect what it did."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cloud_sniper.domain import naming

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure the user can act on; its message says what to do."""


class EndpointSession:
    """A boto3-session look-alike whose clients talk to one endpoint (the local server)."""

    def __init__(self, clients: Callable[[str], Any], region_name: str) -> None:
        self._clients = clients
        self.region_name = region_name

    def client(self, service_name: str, **_: Any) -> Any:
        return self._clients(service_name)

    def resource(self, service_name: str, **_: Any) -> Any:
        """A boto3 resource (DynamoDB's tables) over this endpoint's client."""
        import boto3

        clients = self._clients

        class Bound(boto3.session.Session):
            # boto3 builds a resource on the client its session makes: make it ours.
            def client(self, name: str, *args: Any, **kwargs: Any) -> Any:
                return clients(name)

        return Bound(region_name=self.region_name).resource(service_name)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cloud-sniper` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command_function"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.command_function(args)
    except CliError as exc:
        print(f"cloud-sniper: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except _UsageError as exc:
        print(f"cloud-sniper: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left early (`| head`): stop quietly, as other Unix commands do.
        _quiet_stdout()
        return EXIT_OK


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


# --- connections --------------------------------------------------------------------------


@contextmanager
def _local_pipeline(args: argparse.Namespace) -> Iterator[Callable[[str], Any]]:
    """Clients for the local pipeline: in this process, or on the local server (started if need)."""
    from cloud_sniper.local import server
    from cloud_sniper.local.runtime import client_factory

    policy = _policy(args)
    if getattr(args, "ephemeral", False):
        yield from _ephemeral_pipeline(policy)
        return

    status = server.read_status()
    if status is not None and policy is not None and status.policy != str(policy):
        raise CliError(
            f"the local server runs with {status.policy or 'the default policy'}, not {policy}: "
            f"restart it with `cloud-sniper local down` and `cloud-sniper local up --policy "
            f"{policy}`, or add --ephemeral"
        )
    if status is None:
        _say(
            args,
            "starting the local server (emulated AWS account, first start synthesizes the app)",
        )
        status = server.start_background(policy)
        _say(args, f"local server up on {status.endpoint_url}, log: {status.log_file}")
    yield client_factory(endpoint_url=status.endpoint_url)


def _policy(args: argparse.Namespace) -> Path | None:
    """The policy file asked for, checked now so that a typo is not a failed synth later."""
    policy = getattr(args, "policy", None)
    if policy is None:
        return None
    path = Path(policy).resolve()
    if not path.is_file():
        raise CliError(f"--policy {policy}: no such file")
    from cloud_sniper.domain.policy import PolicyError, load_policy

    try:
        load_policy(path)
    except PolicyError as exc:
        raise CliError(str(exc)) from exc
    return path


def _ephemeral_pipeline(policy: Path | None) -> Iterator[Callable[[str], Any]]:
    from cloud_sniper.local import server
    from cloud_sniper.local.account import seed_estate
    from cloud_sniper.local.runtime import LocalCloud

    assembly = server.synthesize_for(policy)
    with LocalCloud(assembly, log_file=server.state_dir() / "functions.log") as cloud:
        seed_estate(cloud.clients)
        yield cloud.clients


def _session(args: argparse.Namespace) -> Any:
    """A session on a real AWS account when asked for, else on the running local server."""
    if args.profile or args.region:
        import boto3

        return boto3.Session(profile_name=args.profile, region_name=args.region)

    from cloud_sniper.local import server
    from cloud_sniper.local.runtime import REGION, client_factory

    status = server.read_status()
    if status is None:
        raise CliError(
            "the local server is not running: start it with `cloud-sniper local up` "
            "(or run `cloud-sniper demo`), or pass --profile/--region for an AWS account"
        )
    return EndpointSession(client_factory(endpoint_url=status.endpoint_url), REGION)


# --- commands -----------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from cloud_sniper.local.account import load_estate
    from cloud_sniper.local.demo import DEMO_FAULTS, demo_findings
    from cloud_sniper.local.faults import set_faults

    with _local_pipeline(args) as clients:
        set_faults(clients("ssm"), DEMO_FAULTS)
        documents = demo_findings(load_estate(clients))
        return _process(args, clients, documents, [], dry_run=False)


def _run(args: argparse.Namespace) -> int:
    from cloud_sniper.domain.normalize import iter_findings

    documents: list[tuple[str, dict]] = []
    rejected: list[tuple[str, str]] = []
    for path in _finding_files(args.paths):
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            rejected.append((path, f"cannot read: {exc.strerror}"))
            continue
        for locator, item in iter_findings(content, path):
            if isinstance(item, Exception):
                rejected.append((locator, str(item)))
            else:
                documents.append((locator, item))

    with _local_pipeline(args) as clients:
        return _process(args, clients, documents, rejected, dry_run=args.dry_run)


FINDING_SUFFIXES = (".json", ".jsonl", ".jsonl.gz", ".json.gz")


def _finding_files(paths: Sequence[str]) -> Iterator[str]:
    """The paths given, with each folder replaced by the finding files under it, in order."""
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            yield path
            continue
        for child in sorted(folder.rglob("*")):
            if child.is_file() and child.name.endswith(FINDING_SUFFIXES):
                yield str(child)


def _process(
    args: argparse.Namespace,
    clients: Callable[[str], Any],
    documents: list[tuple[str, dict]],
    rejected: list[tuple[str, str]],
    dry_run: bool,
) -> int:
    from cloud_sniper.local import pipeline

    started = time.monotonic()
    submissions, rejections = pipeline.submit(clients, documents, dry_run=dry_run)
    rejected += [(rejection.locator, rejection.error) for rejection in rejections]
    _say(args, f"sent {len(submissions)} finding(s) through the pipeline")
    results = pipeline.wait(clients, submissions)

    answer = getattr(args, "approve", None)
    if answer in ("all", "none"):
        waiting = [result for result in results if result.approval_id]
        _answer_all(clients, waiting, approve=answer == "all")
        if waiting:
            again = pipeline.wait(clients, [result.submission for result in waiting])
            by_name = {result.submission.execution_name: result for result in again}
            results = [by_name.get(r.submission.execution_name, r) for r in results]

    out_dir = Path(args.out)
    for result in results:
        pipeline.download_reports(clients, result, out_dir)
    seconds = time.monotonic() - started

    if args.json:
        print(json.dumps(_json_document(results, rejected), indent=2))
    else:
        _print_results(results, rejected, out_dir, seconds, ephemeral=args.ephemeral)
    return EXIT_REJECTED if rejected else EXIT_OK


def _answer_all(clients: Callable[[str], Any], waiting: list[Any], approve: bool) -> None:
    """Answer the run's approvals through the local approvals API, as a person would."""
    from cloud_sniper.approvals import ApprovalError

    api = _local_approvals_api(clients)
    verdict = "approved" if approve else "denied"
    for result in waiting:
        send = api.approve if approve else api.deny
        try:
            send(result.approval_id, reason=f"{verdict} by `cloud-sniper demo --approve`")
        except ApprovalError as exc:
            raise CliError(str(exc)) from exc


def _approver(session: Any) -> str:
    try:
        return session.client("sts").get_caller_identity()["Arn"]
    except Exception:  # no identity to be had: name the local user
        return f"local:{getpass.getuser()}"


def _local_approvals_api(clients: Callable[[str], Any]) -> Any:
    from cloud_sniper.approvals import ApprovalError, local_api

    try:
        return local_api(clients)
    except ApprovalError as exc:
        raise CliError(f"the local account has no approvals API: {exc}") from exc


def _approvals_api(args: argparse.Namespace) -> Any:
    """The approvals API of a deployment (by profile, region, stack or URL), else the local one."""
    if not (args.profile or args.region or args.stack or args.api_url):
        return _local_approvals_api(_session(args).client)

    import boto3
    from botocore.exceptions import BotoCoreError

    from cloud_sniper.approvals import ApprovalError, ApprovalsApi, api_url_from_stack, region_of

    try:
        session = boto3.Session(profile_name=args.profile, region_name=args.region)
        credentials = session.get_credentials()
        if credentials is None:
            raise CliError(
                "no AWS credentials to sign the request with: pass --profile, or set them as "
                "the AWS CLI reads them"
            )
        url = args.api_url or api_url_from_stack(
            session.client("cloudformation"), args.stack or naming.APPROVALS_API_STACK
        )
        frozen = credentials.get_frozen_credentials()
    except ApprovalError as exc:
        raise CliError(str(exc)) from exc
    except BotoCoreError as exc:
        raise CliError(f"cannot reach the AWS account: {exc}") from exc
    # A request is signed for the API's own region: the one in its URL, if the URL says.
    region = args.region or region_of(url) or session.region_name
    if not region:
        raise CliError(f"the region of {url} is unknown: pass --region")
    return ApprovalsApi(url, frozen, region)


@contextmanager
def _approval_errors() -> Iterator[None]:
    from cloud_sniper.approvals import ApprovalError

    try:
        yield
    except ApprovalError as exc:
        raise CliError(str(exc)) from exc


def _approvals_list(args: argparse.Namespace) -> int:
    status = "all" if args.all else args.status
    with _approval_errors():
        approvals = _approvals_api(args).list(status)
    if args.json:
        print(json.dumps(approvals, indent=2))
        return EXIT_OK
    rows = [
        (
            _get(item, "approval_id"),
            _get(item, "status"),
            _get(item, "finding", "type"),
            ", ".join(_action_text(action) for action in _get(item, "actions") or []),
            _get(item, "expires_at"),
            _get(item, "approver"),
        )
        for item in approvals
    ]
    _table(("approval", "status", "finding type", "planned actions", "expires", "by"), rows)
    if not rows:
        print("no approvals waiting" if status == "pending" else f"no approvals ({status})")
    return EXIT_OK


def _approvals_show(args: argparse.Namespace) -> int:
    with _approval_errors():
        approval = _approvals_api(args).get(args.approval_id)
    if args.json:
        print(json.dumps(approval, indent=2))
        return EXIT_OK
    print("\n".join(approval_lines(approval)))
    return EXIT_OK


def approval_lines(approval: dict[str, Any]) -> list[str]:
    """An approval as `approvals show` prints it: the request, then its answer."""
    finding = approval.get("finding") or {}
    lines = [
        f"{approval.get('approval_id')}: {approval.get('status')}",
        f"  finding:    {finding.get('type')}, severity {finding.get('severity')}"
        f" ({finding.get('severity_label')})",
        f"  account:    {finding.get('account_id')} in {finding.get('region')}",
        f"  incident:   {approval.get('incident_id')} (execution {approval.get('execution_name')})",
        f"  decision:   {approval.get('decision_reason')}",
        "  actions:    "
        + (", ".join(_action_text(action) for action in approval.get("actions") or []) or "-"),
    ]
    lines += [
        f"  refused:    {refusal.get('kind')} {refusal.get('target')}: {refusal.get('reason')}"
        for refusal in approval.get("refusals") or []
    ]
    lines += [
        f"  requested:  {approval.get('requested_at')}",
        f"  expires:    {approval.get('expires_at')}",
    ]
    if approval.get("answered_at"):
        lines += [
            f"  answered:   {approval.get('answered_at')} by {approval.get('approver')}",
            f"  why:        {approval.get('reason')}",
        ]
    return lines


def _approvals_answer(args: argparse.Namespace, approve: bool) -> int:
    with _approval_errors():
        api = _approvals_api(args)
        approval = (api.approve if approve else api.deny)(args.approval_id, args.reason)
    verdict = "approved" if approve else "denied"
    print(f"{args.approval_id} {verdict} by {approval.get('approver')}; the execution resumes")
    if args.json:
        print(json.dumps(approval, indent=2))
    return EXIT_OK


def _executions_list(args: argparse.Namespace) -> int:
    from cloud_sniper.local.pipeline import state_machine_arn

    session = _session(args)
    clients = session.client
    sfn = clients("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=state_machine_arn(clients))["executions"]
    rows = [
        (item["name"], item["status"], _time(item.get("startDate")), _time(item.get("stopDate")))
        for item in executions
    ]
    _table(("execution", "status", "started", "stopped"), rows)
    return EXIT_OK


def _executions_show(args: argparse.Namespace) -> int:
    from cloud_sniper.local.pipeline import execution_arn

    session = _session(args)
    sfn = session.client("stepfunctions")
    arn = execution_arn(session.client, args.name)
    try:
        execution = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist as exc:
        raise CliError(f"no execution named {args.name}") from exc
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    print(f"{args.name}: {execution['status']} (started {_time(execution['startDate'])})")
    for row in execution_path(history):
        print("  " + row)
    return EXIT_OK


def execution_path(history: list[dict[str, Any]]) -> list[str]:
    """The states an execution went through, with timings and failures, as the console shows."""
    started = history[0]["timestamp"] if history else None
    entered: dict[str, Any] = {}
    rows = []
    for event in history:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            entered[event["stateEnteredEventDetails"]["name"]] = event["timestamp"]
        elif kind.endswith("StateExited"):
            name = event["stateExitedEventDetails"]["name"]
            begin = entered.get(name, event["timestamp"])
            offset = (begin - started).total_seconds() if started else 0.0
            took = (event["timestamp"] - begin).total_seconds()
            rows.append(f"+{offset:7.2f}s  {name:<18} {took:6.2f}s")
        elif kind.endswith("Failed") or kind.endswith("TimedOut"):
            details = next((v for k, v in event.items() if k.endswith("EventDetails")), {})
            failure = {"error": details.get("error", ""), "cause": details.get("cause", "")}
            rows.append(f"{'':10} {kind}: {_failure_text(failure)[:150]}")
    return rows


def _blocks_list(args: argparse.Namespace) -> int:
    session = _session(args)
    dynamodb = session.client("dynamodb")
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=naming.BLOCKS_TABLE):
        items += [
            {key: next(iter(value.values())) for key, value in item.items()}
            for item in page["Items"]
        ]
    if not args.all:
        items = [item for item in items if item.get("status") == "active"]
    items.sort(key=lambda item: item.get("created_at", ""))
    if args.json:
        print(json.dumps(items, indent=2, default=str))
        return EXIT_OK
    rows = [
        (
            item.get("kind"),
            item.get("target"),
            item.get("nacl_id") or item.get("block_id", "").split("#")[1],
            item.get("rule_number", ""),
            _block_status(item),
            item.get("expires_at"),
            item.get("incident_id"),
        )
        for item in items
    ]
    _table(("kind", "address", "where", "rule", "status", "expires", "incident"), rows)
    if not rows:
        print("no blocks in force" if not args.all else "no blocks recorded")
    return EXIT_OK


def _block_status(item: dict[str, Any]) -> str:
    """A block's status, "queued" for a WAF block the WAF writer has not put in its set yet."""
    status = str(item.get("status"))
    if item.get("kind") == "waf_block" and status == "active" and not item.get("written_at"):
        return "queued"
    return status


def _blocks_expire(args: argparse.Namespace) -> int:
    session = _session(args)
    response = session.client("lambda").invoke(
        FunctionName=naming.FUNCTIONS["expire"], Payload=b"{}"
    )
    payload = json.loads(response["Payload"].read() or b"{}")
    if response.get("FunctionError"):
        raise CliError(f"the expiry run failed: {payload.get('errorMessage', payload)}")
    print(json.dumps(payload, indent=2, default=str))
    return EXIT_OK


def _actions_list(args: argparse.Namespace) -> int:
    from cloud_sniper import responses

    ports = _ports(args)
    with _response_errors():
        records = responses.list_actions(ports, include_all=args.all, incident_id=args.incident)
    if args.json:
        print(json.dumps([record.model_dump(mode="json") for record in records], indent=2))
        return EXIT_OK
    _table(responses.ACTION_COLUMNS, [responses.action_row(record) for record in records])
    if not records:
        print("no actions in force" if not args.all else "no actions recorded")
    return EXIT_OK


def _rollback(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from cloud_sniper import responses

    session = _session(args)
    ports = _ports(args, session)
    with _response_errors():
        recorded = responses.incident_recorded(session, args.incident_id)
        done = responses.rollback(
            args.incident_id,
            ports,
            who=_approver(session),
            reason=args.reason,
            now=datetime.now(UTC),
            recorded=recorded,
            action=args.action,
        )
    if args.json:
        print(json.dumps(done.model_dump(mode="json"), indent=2))
    elif not done.undone and not done.failed:
        print(f"{args.incident_id}: nothing in force to roll back")
    else:
        for undone in done.undone:
            print(f"undone {undone.kind.value} {undone.target}: {undone.detail}")
        for failed_id, error in done.failed.items():
            print(f"NOT undone {failed_id}: {error}")
        print(f"{args.incident_id}: {len(done.undone)} undone by {done.undone_by}")
    if done.failed:
        print(f"{len(done.failed)} still in force: run the rollback again", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def _release(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from cloud_sniper import responses

    session = _session(args)
    ports = _ports(args, session)
    with _response_errors():
        record = responses.release(
            args.instance_id, ports, _approver(session), args.reason, datetime.now(UTC)
        )
    if args.json:
        print(json.dumps(record.model_dump(mode="json"), indent=2))
    else:
        print(
            f"released {args.instance_id} (isolated by {record.incident_id}): {record.verification}"
        )
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from botocore.exceptions import BotoCoreError, ClientError

    from cloud_sniper.domain.errors import TransientAwsError
    from services.report import summary, summary_handler, summary_render

    now = datetime.now(UTC)
    try:
        since = summary.period_bound(args.since, now, "--since")
        until = summary.period_bound(args.until, now, "--until") if args.until else now
        span = summary.period(since, until)
    except summary.SummaryError as exc:
        raise _UsageError(str(exc)) from exc

    session = _session(args)
    try:
        result = summary_handler.summarize(
            summary_handler.SummarySources.from_session(session), span, now
        )
    except TransientAwsError as exc:
        raise CliError(f"{exc}; try again") from exc
    except (ClientError, BotoCoreError) as exc:
        raise CliError(f"cannot read the incidents, blocks and actions tables: {exc}") from exc

    formats = args.formats or list(summary_render.FORMATS)
    for path in summary_render.write_files(result, Path(args.out), dict.fromkeys(formats)):
        print(f"wrote {path}")
    for line in summary_headline(result):
        print(line)
    return EXIT_OK


def summary_headline(result: Any) -> list[str]:
    """The few figures `cloud-sniper report` prints after the files it wrote."""
    from services.report import summary_render

    figures = dict(summary_render.headline(result))
    lines = [
        f"{summary_render.period_text(result)}: {figures['Incidents']} incident(s), "
        f"{figures['Mitigated']} mitigated, {figures['Denied or timed out']} denied or timed "
        f"out, {figures['Failed']} failed",
        f"time to mitigation: median {figures['Median time to mitigation']}, "
        f"p95 {figures['p95 time to mitigation']}",
    ]
    if result.by_family:
        top = result.by_family[0]
        lines.append(f"most frequent family: {top.name} ({top.count})")
    if result.unreadable:
        lines.append(f"{result.unreadable} record(s) could not be read: see the report")
    return lines


def _ports(args: argparse.Namespace, session: Any = None) -> Any:
    """The mitigate service's adapters over the account's session."""
    from cloud_sniper import responses

    return responses.connect(session or _session(args))


@contextmanager
def _response_errors() -> Iterator[None]:
    from cloud_sniper.domain.errors import TransientAwsError
    from cloud_sniper.responses import ResponseError

    try:
        yield
    except ResponseError as exc:
        raise CliError(str(exc)) from exc
    except TransientAwsError as exc:
        raise CliError(f"{exc}; try again") from exc


def _local_up(args: argparse.Namespace) -> int:
    from cloud_sniper.local import server

    status = server.read_status()
    if status is not None:
        print(
            f"already running on {status.endpoint_url} (pid {status.pid}), log: {status.log_file}"
        )
        return EXIT_OK
    print("starting the local server: synthesizing and deploying the app into an emulated account")
    status = server.start_background(_policy(args))
    print(f"running on {status.endpoint_url} (pid {status.pid}), log: {status.log_file}")
    return EXIT_OK


def _local_down(args: argparse.Namespace) -> int:
    from cloud_sniper.local import server

    status = server.stop_background()
    if status is None:
        print("the local server is not running")
        return EXIT_OK
    print(
        f"stopped the local server (pid {status.pid}). Its emulated account is gone: executions, "
        "approvals, blocks and incidents lived only in it; reports written under ./out stay."
    )
    return EXIT_OK


def _local_status(args: argparse.Namespace) -> int:
    from cloud_sniper.local import server

    status = server.read_status()
    if status is None:
        print("the local server is not running")
        return EXIT_REJECTED
    age = time.time() - status.started_at
    where = f"running on {status.endpoint_url} (pid {status.pid})"
    print(f"{where} for {age:.0f} s, log: {status.log_file}")
    print(f"policy: {status.policy or 'the default policy'}")
    return EXIT_OK


def _policy_validate(args: argparse.Namespace) -> int:
    from cloud_sniper import policy_check

    with _usage_errors():
        report = policy_check.validate_policy_file(args.file)
    if args.json:
        print(json.dumps(policy_check.report_document(report), indent=2))
    else:
        print("\n".join(policy_check.report_lines(report)))
    return EXIT_OK if report.valid else EXIT_REJECTED


def _policy_test(args: argparse.Namespace) -> int:
    from cloud_sniper import policy_check

    with _usage_errors():
        policy = _checked_policy(args.file)
        run = policy_check.run_policy_tests(policy, args.file, args.findings)
    if args.json:
        print(json.dumps(policy_check.run_document(run), indent=2))
    else:
        print("\n".join(policy_check.run_lines(run)))
    return EXIT_OK if run.passed else EXIT_REJECTED


def _policy_explain(args: argparse.Namespace) -> int:
    from cloud_sniper import policy_check

    policy_file = args.policy or str(policy_check.DEFAULT_POLICY_FILE)
    with _usage_errors():
        policy = _checked_policy(policy_file)
        explanations, rejected = policy_check.explain_file(policy, args.finding_file)
    if args.json:
        document = policy_check.explanations_document(policy_file, explanations, rejected)
        print(json.dumps(document, indent=2))
    else:
        for number, explanation in enumerate(explanations):
            print(
                ("\n" if number else "")
                + "\n".join(policy_check.explanation_lines(policy_file, explanation))
            )
        for rejection in rejected:
            print(f"rejected {rejection.source}: {rejection.error}")
    return EXIT_REJECTED if rejected or not explanations else EXIT_OK


def _checked_policy(path: str) -> Any:
    from cloud_sniper import policy_check
    from cloud_sniper.domain.policy import PolicyError

    try:
        return policy_check.read_policy(path)
    except PolicyError as exc:
        raise CliError(f"{exc} (`cloud-sniper policy validate {path}` gives each line)") from exc


class _UsageError(Exception):
    """A file named on the command line is missing or of an unknown kind."""


@contextmanager
def _usage_errors() -> Iterator[None]:
    from cloud_sniper.policy_check import UnreadableFileError

    try:
        yield
    except UnreadableFileError as exc:
        raise _UsageError(str(exc)) from exc


def _policy_push(args: argparse.Namespace) -> int:
    from cloud_sniper import policy_store
    from cloud_sniper.domain.policy import PolicyError
    from services.decide.settings import DEFAULT_POLICY_MAX_AGE_SECONDS

    try:
        prepared = policy_store.prepare(args.file)
    except PolicyError as exc:
        raise CliError(str(exc)) from exc
    try:
        version, tier = policy_store.push(_session(args), prepared)
    except policy_store.PolicyStoreError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        document = {
            "parameter": naming.POLICY_PARAMETER,
            "version": version,
            "tier": tier,
            "bytes": prepared.size,
            "rules": [rule.name for rule in prepared.policy.rules],
        }
        print(json.dumps(document, indent=2))
        return EXIT_OK
    print(
        f"pushed {args.file} to {naming.POLICY_PARAMETER}: version {version}, "
        f"{len(prepared.policy.rules)} rule(s), {prepared.size} bytes, {tier} tier"
    )
    print(f"decide applies it within {DEFAULT_POLICY_MAX_AGE_SECONDS} s (its cache of the policy)")
    return EXIT_OK


def _policy_show(args: argparse.Namespace) -> int:
    from cloud_sniper import policy_store
    from cloud_sniper.domain.policy import PolicyError

    try:
        deployed = policy_store.show(_session(args))
    except (policy_store.PolicyStoreError, PolicyError) as exc:
        raise CliError(str(exc)) from exc
    rules = deployed.policy.rules
    if args.json:
        document = {
            "parameter": deployed.name,
            "version": deployed.version,
            "last_modified": deployed.last_modified,
            "bytes": deployed.size,
            "rules": [{"name": r.name, "mode": r.mode.value} for r in rules],
        }
        print(json.dumps(document, indent=2, default=str))
        return EXIT_OK
    print(
        f"{deployed.name}: version {deployed.version}, last modified "
        f"{_time(deployed.last_modified)}, {deployed.size} bytes"
    )
    _table(
        ("rule", "mode", "actions"),
        [(r.name, r.mode.value, ", ".join(a.value for a in r.actions) or "-") for r in rules],
    )
    return EXIT_OK


# --- output -------------------------------------------------------------------------------


def _json_document(results: list[Any], rejected: list[tuple[str, str]]) -> dict[str, Any]:
    findings = []
    for result in results:
        finding = result.submission.finding
        decision = result.decision or {}
        incident = result.incident or {}
        findings.append(
            {
                "finding_id": finding.id,
                "type": finding.type,
                "severity": finding.severity,
                "source": result.submission.locator,
                "decision": {
                    "mode": decision.get("mode"),
                    "rule": decision.get("rule"),
                    "reason": decision.get("reason"),
                },
                "actions": _action_rows(result, decision, incident),
                "outcome": incident.get("outcome"),
                "failure": incident.get("failure"),
                "execution": {"name": result.submission.execution_name, "status": result.status},
                "approval_id": result.approval_id,
                "reports": [str(path) for path in result.report_files],
            }
        )
    return {
        "findings": findings,
        "rejected": [{"source": source, "error": error} for source, error in rejected],
    }


def _action_rows(result: Any, decision: dict, incident: dict) -> list[dict[str, str]]:
    """Each action with its status: as run, left in force by an earlier attempt, or planned."""
    rows = [
        {"kind": a["kind"], "target": a["target"], "status": a["status"]}
        for a in incident.get("actions", []) + incident.get("blocks_in_force", [])
    ]
    done = {(row["kind"], row["target"]) for row in rows}
    status = "awaiting_approval" if result.approval_id else "not_run"
    rows += [
        {"kind": a["kind"], "target": a["target"], "status": status}
        for a in decision.get("actions", [])
        if (a["kind"], a["target"]) not in done
    ]
    rows += [
        {"kind": a["kind"], "target": a["target"], "status": "unavailable"}
        for a in decision.get("unavailable", [])
    ]
    return rows


def _actions_text(actions: list[dict[str, str]]) -> str:
    """Actions grouped by target and status: `45.155.205.233/32 waf+nacl applied`."""
    by_target: dict[str, dict[str, list[str]]] = {}
    for action in actions:
        kinds = by_target.setdefault(action["target"], {}).setdefault(action["status"], [])
        kinds.append(action["kind"].removesuffix("_block"))
    return "; ".join(
        f"{target} "
        + ", ".join(
            f"{'+'.join(sorted(kinds, reverse=True))} {status}"
            for status, kinds in statuses.items()
        )
        for target, statuses in by_target.items()
    )


def _print_results(
    results: list[Any],
    rejected: list[tuple[str, str]],
    out_dir: Path,
    seconds: float,
    ephemeral: bool,
) -> None:
    document = _json_document(results, rejected)
    rows = []
    for item in document["findings"]:
        outcome = item["outcome"] or item["execution"]["status"].lower()
        rows.append(
            (
                item["finding_id"][:12],
                item["type"],
                f"{item['severity']:.1f}",
                item["decision"]["mode"] or "-",
                _actions_text(item["actions"]) or "-",
                outcome,
            )
        )
    _table(("finding", "type", "severity", "decision", "actions", "outcome"), rows)
    print(f"\n{len(results)} finding(s) in {seconds:.1f} s; reports under {out_dir.resolve()}/")
    for item in document["findings"]:
        if item["failure"]:
            failure = item["failure"]
            print(f"failed {item['finding_id'][:12]}: {_failure_text(failure)}")
    for source, error in rejected:
        print(f"rejected {source}: {error}")
    waiting = [result for result in results if result.approval_id]
    if waiting:
        print("\nwaiting for approval:")
        for result in waiting:
            print(f"  cloud-sniper approvals approve {result.approval_id} --reason '...'")
            print(f"  cloud-sniper approvals deny    {result.approval_id} --reason '...'")
        if ephemeral:
            print(
                "  (--ephemeral: these end with this process; use the local server to answer later)"
            )
    print("blocks in force: cloud-sniper blocks list")
    print("isolations, revocations, closures in force: cloud-sniper actions list")
    print("each execution's path: cloud-sniper executions show NAME")


def _failure_text(failure: dict[str, str]) -> str:
    """A failure's error and message; a Lambda error's cause is its JSON payload."""
    try:
        message = json.loads(failure["cause"])["errorMessage"]
    except (ValueError, KeyError, TypeError):
        message = failure["cause"]
    return f"{failure['error']}: {message[:200]}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    text_rows = [[str(cell) if cell is not None else "-" for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in text_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    print("  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)))
    print("  ".join("-" * width for width in widths))
    for row in text_rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def _say(args: argparse.Namespace, message: str) -> None:
    """Progress for people: on stderr, so that --json keeps stdout to one document."""
    print(message, file=sys.stderr if getattr(args, "json", False) else sys.stdout)


def _get(item: Any, *path: str) -> Any:
    value = item if isinstance(item, dict) else getattr(item, "__dict__", {})
    for key in path:
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _action_text(action: Any) -> str:
    return f"{_get(action, 'kind')} {_get(action, 'target')}"


def _jsonable(item: Any) -> Any:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else item


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# --- arguments ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-sniper",
        description="Security operations for AWS: findings enriched, decided, mitigated, reported.",
    )
    commands = parser.add_subparsers(title="commands")

    def pipeline_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--json", action="store_true", help="print one JSON document")
        command.add_argument("--out", default="out", help="folder for the reports (default ./out)")
        command.add_argument(
            "--ephemeral",
            action="store_true",
            help="run everything in this process and end with it",
        )
        command.add_argument(
            "--approve",
            choices=("all", "none"),
            help="answer every approval the run asks for (default: leave them waiting)",
        )
        command.add_argument(
            "--policy", metavar="FILE", help="decide with this policy (YAML) instead of the default"
        )

    demo = commands.add_parser("demo", help="run the bundled findings through the local pipeline")
    pipeline_options(demo)
    demo.set_defaults(command_function=_demo)

    run = commands.add_parser("run", help="send your GuardDuty findings through the local pipeline")
    run.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help=".json, .jsonl or .jsonl.gz files, or folders holding them",
    )
    run.add_argument("--dry-run", action="store_true", help="plan and record, change nothing")
    pipeline_options(run)
    run.set_defaults(command_function=_run)

    def account_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--profile", help="AWS profile of a deployed stack (default: local)")
        command.add_argument("--region", help="AWS region of a deployed stack")
        command.add_argument("--json", action="store_true", help="print JSON")

    def api_options(command: argparse.ArgumentParser) -> None:
        account_options(command)
        command.add_argument(
            "--stack",
            help=f"the approvals stack whose output gives the API's URL "
            f"(default {naming.APPROVALS_API_STACK})",
        )
        command.add_argument("--api-url", help="the approvals API's URL, instead of the stack's")

    approvals = commands.add_parser(
        "approvals",
        help="list and answer approvals",
        description="List, show and answer approvals through the approvals API: the local "
        "server's by default; a deployment's with --profile, --region, --stack or --api-url. "
        "Requests are signed with SigV4; the approver recorded is the principal that signs.",
    )
    approval_commands = approvals.add_subparsers(title="approvals commands", required=True)
    listing = approval_commands.add_parser("list", help="approvals waiting for an answer")
    listing.add_argument(
        "--status",
        choices=("pending", "approved", "denied", "timed_out", "all"),
        default="pending",
        help="the approvals with this status (default pending)",
    )
    listing.add_argument("--all", action="store_true", help="every approval, as --status all")
    api_options(listing)
    listing.set_defaults(command_function=_approvals_list)
    show = approval_commands.add_parser("show", help="one approval: its request and its answer")
    show.add_argument("approval_id", metavar="ID")
    api_options(show)
    show.set_defaults(command_function=_approvals_show)
    for verb, approve in (("approve", True), ("deny", False)):
        command = approval_commands.add_parser(verb, help=f"{verb} a waiting action")
        command.add_argument("approval_id", metavar="ID")
        command.add_argument("--reason", required=True, help="why, for the incident record")
        api_options(command)
        command.set_defaults(
            command_function=lambda args, approve=approve: _approvals_answer(args, approve)
        )

    executions = commands.add_parser("executions", help="the state machine's executions")
    execution_commands = executions.add_subparsers(title="executions commands", required=True)
    listing = execution_commands.add_parser("list", help="every execution and its status")
    account_options(listing)
    listing.set_defaults(command_function=_executions_list)
    show = execution_commands.add_parser(
        "show", help="the path of one execution through the states"
    )
    show.add_argument("name", metavar="NAME")
    account_options(show)
    show.set_defaults(command_function=_executions_show)

    blocks = commands.add_parser("blocks", help="addresses blocked and until when")
    block_commands = blocks.add_subparsers(title="blocks commands", required=True)
    listing = block_commands.add_parser("list", help="blocks in force")
    listing.add_argument("--all", action="store_true", help="expired and removed ones too")
    account_options(listing)
    listing.set_defaults(command_function=_blocks_list)
    expire = block_commands.add_parser("expire", help="run the expiry now")
    account_options(expire)
    expire.set_defaults(command_function=_blocks_expire)

    actions = commands.add_parser(
        "actions",
        help="what the response catalogue did: isolations, revocations, bucket closures, C2 cuts",
    )
    action_commands = actions.add_subparsers(title="actions commands", required=True)
    listing = action_commands.add_parser(
        "list",
        help="actions in force; the WAF and network ACL blocks are in `blocks list`",
        description="The response catalogue's actions in force (all with --all, with who undid "
        "each, when and why). The WAF and network ACL blocks are not among them: "
        "`cloud-sniper blocks list` shows those.",
    )
    listing.add_argument("--all", action="store_true", help="undone and expired ones too")
    listing.add_argument("--incident", metavar="ID", help="only the actions of this incident")
    account_options(listing)
    listing.set_defaults(command_function=_actions_list)

    rollback = commands.add_parser(
        "rollback",
        help="undo what an incident did: its actions and its WAF and network ACL blocks in force",
        description="Undo what an incident did: each response catalogue action of it in force "
        "(isolation, revocation, bucket closure, C2 cut) through the action's own undo, and its "
        "WAF and network ACL blocks in force, lifted as their expiry would lift them. Each action "
        "is recorded with who undid it (the caller's identity) and why, each block as rolled "
        "back. Twice is harmless: the second finds nothing in force.",
    )
    rollback.add_argument("incident_id", metavar="INCIDENT_ID", help="inc-..., as reports name it")
    rollback.add_argument(
        "--action",
        metavar="ACTION_ID",
        help="only this one: an action id (kind:target), a record id (kind#target) or a block id",
    )
    rollback.add_argument("--reason", required=True, help="why, for the action's record")
    account_options(rollback)
    rollback.set_defaults(command_function=_rollback)

    release = commands.add_parser(
        "release",
        help="undo the isolation of an instance: its security groups put back",
        description="Undo the isolation of an instance: its security groups, protections, Auto "
        "Scaling and load balancer membership put back; the forensic snapshots are kept.",
    )
    release.add_argument("instance_id", metavar="INSTANCE_ID")
    release.add_argument("--reason", required=True, help="why, for the isolation's record")
    account_options(release)
    release.set_defaults(command_function=_release)

    report = commands.add_parser(
        "report",
        help="the summary of a period: counts, top indicators, time to mitigation, CSF functions",
        description="Summarize the incidents reported in a period, and the blocks and actions "
        "undone in it, as an HTML page with charts, a Markdown report and a JSON document. "
        "A bound is a time ago (30m, 12h, 7d, 2w) or an ISO date or time (UTC if no zone).",
    )
    report.add_argument("--since", default="7d", help="start of the period (default 7d ago)")
    report.add_argument("--until", help="end of the period (default now)")
    report.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=("html", "markdown", "json"),
        help="write this format; repeat for several (default: all three)",
    )
    report.add_argument("--out", default="out", help="folder for the files (default ./out)")
    report.add_argument("--profile", help="AWS profile of a deployed stack (default: local)")
    report.add_argument("--region", help="AWS region of a deployed stack")
    report.set_defaults(command_function=_report)

    local = commands.add_parser("local", help="the local server: an emulated account on loopback")
    local_commands = local.add_subparsers(title="local commands", required=True)
    for name, function, text in (
        ("up", _local_up, "start it in the background"),
        ("down", _local_down, "stop it (its state is gone)"),
        ("status", _local_status, "say whether it runs, where and its log"),
    ):
        command = local_commands.add_parser(name, help=text)
        command.set_defaults(command_function=function)
        if name == "up":
            command.add_argument("--policy", metavar="FILE", help="a policy instead of the default")

    policy = commands.add_parser("policy", help="check, test and explain a response policy")
    policy_commands = policy.add_subparsers(title="policy commands", required=True)
    validate = policy_commands.add_parser(
        "validate", help="check a policy file: each problem with its line, dead rules"
    )
    validate.add_argument("file", metavar="FILE", help="the policy (.yaml, .yml or .json)")
    validate.add_argument("--json", action="store_true", help="print one JSON document")
    validate.set_defaults(command_function=_policy_validate)
    test = policy_commands.add_parser(
        "test", help="decide findings with a policy and check the expectations beside them"
    )
    test.add_argument("file", metavar="FILE", help="the policy (.yaml, .yml or .json)")
    test.add_argument(
        "--findings",
        nargs="+",
        required=True,
        metavar="PATH",
        help="findings files (.json, .jsonl, .jsonl.gz) or folders of them",
    )
    test.add_argument("--json", action="store_true", help="print one JSON document")
    test.set_defaults(command_function=_policy_test)
    explain = policy_commands.add_parser(
        "explain", help="show how a policy decides a finding, rule by rule"
    )
    explain.add_argument("finding_file", metavar="FINDING_FILE", help="a findings file")
    explain.add_argument("--policy", metavar="FILE", help="a policy instead of the default")
    explain.add_argument("--json", action="store_true", help="print one JSON document")
    explain.set_defaults(command_function=_policy_explain)
    push = policy_commands.add_parser(
        "push", help="validate a policy file and make it the deployed policy (its SSM parameter)"
    )
    push.add_argument("file", metavar="FILE", help="the policy (.yaml, .yml or .json)")
    account_options(push)
    push.set_defaults(command_function=_policy_push)
    show = policy_commands.add_parser(
        "show", help="the deployed policy's rules, and its parameter's version and last change"
    )
    account_options(show)
    show.set_defaults(command_function=_policy_show)

    from cloud_sniper.beacons.command import add_to as add_beacons_commands

    add_beacons_commands(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
