"""How the command prints what became of each finding."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from cloud_sniper.cli import _action_rows, _actions_text

DEMO_FINDINGS = Path(__file__).parents[2] / "cloud_sniper" / "demo" / "findings"

DECISION = {
    "actions": [
        {"kind": "nacl_block", "target": "89.248.165.84/32"},
        {"kind": "waf_block", "target": "89.248.165.84/32"},
    ]
}


def test_a_failed_incident_shows_the_block_left_in_force_and_what_did_not_run():
    # Given an incident whose Mitigate failed after the network ACL block was made
    incident = {
        "actions": [],
        "blocks_in_force": [
            {"kind": "nacl_block", "target": "89.248.165.84/32", "status": "applied"}
        ],
    }

    # When its actions are listed
    rows = _action_rows(SimpleNamespace(approval_id=None), DECISION, incident)

    # Then the block in force and the action that never ran are both there
    assert _actions_text(rows) == "89.248.165.84/32 nacl applied, waf not_run"


def test_actions_of_a_waiting_execution_await_approval():
    rows = _action_rows(SimpleNamespace(approval_id="apr-0123456789"), DECISION, {})

    assert _actions_text(rows) == "89.248.165.84/32 waf+nacl awaiting_approval"


def test_a_reader_that_leaves_early_ends_the_command_quietly():
    # Given a command whose reader has gone before it prints (as `| head` leaves)
    finding = DEMO_FINDINGS / "02-port-probe.json"
    command = [sys.executable, "-m", "cloud_sniper.cli", "policy", "explain", str(finding)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()

    # When it prints
    _, errors = process.communicate(timeout=120)

    # Then it ends without a traceback and without an error
    assert b"Traceback" not in errors, errors.decode()
    assert process.returncode == 0
