"""The beacon scan's query on DuckDB over a generated Parquet set, answered as Athena answers.

The scan's query (services.beacons.service.athena_query) rendered for DuckDB runs over the
generated files exposed as the Glue table (database.table, with its string partitions), and
its rows come back as GetQueryResults gives them: every value a string, arrays as `[1, 2]`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from cloud_sniper.beacons import synthetic
from cloud_sniper.beacons.models import ScanOptions
from cloud_sniper.domain import naming
from services.beacons import service

Rows = list[list[str | None]]


def run_on_duckdb(out: Path, scan: service.Window, options: ScanOptions) -> tuple[list[str], Rows]:
    """The scan's query over the set generate() wrote into OUT; columns and Athena's texts."""
    sql = service.athena_query(
        naming.FLOW_LOGS_DATABASE, naming.FLOW_LOGS_TABLE, scan, options, dialect="duckdb"
    )
    return _answer(out, sql)


def run_events_on_duckdb(
    out: Path, scan: service.Window, options: ScanOptions, pairs: list[tuple[str, str, int, int]]
) -> tuple[list[str], Rows]:
    """The verification's query for those pairs over the same set; columns and Athena's texts."""
    sql = service.events_query(
        naming.FLOW_LOGS_DATABASE, naming.FLOW_LOGS_TABLE, scan, options, pairs, dialect="duckdb"
    )
    return _answer(out, sql)


def _answer(out: Path, sql: str) -> tuple[list[str], Rows]:
    connection = duckdb.connect()
    connection.execute(f'CREATE SCHEMA "{naming.FLOW_LOGS_DATABASE}"')
    data = out / synthetic.DATA_DIR
    connection.execute(
        f'CREATE VIEW "{naming.FLOW_LOGS_DATABASE}"."{naming.FLOW_LOGS_TABLE}" AS SELECT * '
        f"FROM read_parquet('{data}/**/*.parquet', hive_partitioning = true, "
        "hive_types_autocast = false)"
    )
    cursor = connection.execute(sql)
    columns = [column[0] for column in cursor.description]
    return columns, [[athena_text(value) for value in row] for row in cursor.fetchall()]


def athena_text(value: Any) -> str | None:
    """A value as Athena's GetQueryResults writes it."""
    if value is None:
        return None
    if isinstance(value, list):
        return "[" + ", ".join(str(item) for item in value) + "]"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(value)


def result_set(columns: list[str], rows: Rows) -> dict[str, Any]:
    """GetQueryResults' ResultSet: the header row first, as Athena answers a SELECT."""
    return {
        "Rows": [_row(columns), *(_row(row) for row in rows)],
        "ResultSetMetadata": {"ColumnInfo": [{"Name": c, "Type": "varchar"} for c in columns]},
    }


def queue_in_moto(columns: list[str], rows: Rows, account: str, region: str) -> None:
    """Have the emulated Athena answer the next query with these rows."""
    from moto.athena.models import QueryResults, athena_backends

    resulted = result_set(columns, rows)
    athena_backends[account][region].query_results_queue.append(
        QueryResults(rows=resulted["Rows"], column_info=resulted["ResultSetMetadata"]["ColumnInfo"])
    )


def _row(values: list[str | None]) -> dict[str, Any]:
    return {"Data": [{} if value is None else {"VarCharValue": value} for value in values]}
