"""Reading VPC Flow Logs in every shape AWS delivers: text (default or custom), gzip, Parquet."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cloud_sniper.beacons.analysis import REQUIRED_FIELDS

# The default format: the version 2 fields, in this order.
DEFAULT_FIELDS = (
    "version",
    "account_id",
    "interface_id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log_status",
)

# Types of the fields that are not strings, as the Parquet delivery declares them; every other
# field (versions 3 to 10, and any AWS adds later) is read as a string.
_INTEGER_FIELDS = {
    "version": "INTEGER",
    "srcport": "INTEGER",
    "dstport": "INTEGER",
    "protocol": "INTEGER",
    "packets": "BIGINT",
    "bytes": "BIGINT",
    "start": "BIGINT",
    "end": "BIGINT",
    "tcp_flags": "INTEGER",
    "traffic_path": "INTEGER",
    "encryption_status": "INTEGER",
}

KNOWN_FIELDS = frozenset(
    DEFAULT_FIELDS
    + (
        "vpc_id",
        "subnet_id",
        "instance_id",
        "tcp_flags",
        "type",
        "pkt_srcaddr",
        "pkt_dstaddr",
        "region",
        "az_id",
        "sublocation_type",
        "sublocation_id",
        "pkt_src_aws_service",
        "pkt_dst_aws_service",
        "flow_direction",
        "traffic_path",
        "ecs_cluster_arn",
        "ecs_cluster_name",
        "ecs_container_instance_arn",
        "ecs_container_instance_id",
        "ecs_container_id",
        "ecs_second_container_id",
        "ecs_service_name",
        "ecs_task_definition_arn",
        "ecs_task_arn",
        "ecs_task_id",
        "reject_reason",
        "resource_id",
        "encryption_status",
    )
)

# The relation every input is exposed as, whatever its format: the analysis reads these.
STANDARD_COLUMNS: dict[str, str] = {
    "srcaddr": "VARCHAR",
    "dstaddr": "VARCHAR",
    "srcport": "INTEGER",
    "dstport": "INTEGER",
    "protocol": "INTEGER",
    "packets": "BIGINT",
    "bytes": "BIGINT",
    "start": "BIGINT",
    "end": "BIGINT",
    "action": "VARCHAR",
    "log_status": "VARCHAR",
    "interface_id": "VARCHAR",
    "flow_direction": "VARCHAR",
    "pkt_srcaddr": "VARCHAR",
    "pkt_dstaddr": "VARCHAR",
    "tcp_flags": "INTEGER",
}


_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_FIELD_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_SNIFF_BYTES = 64 * 1024


class FormatError(ValueError):
    """An input that is not a flow log this reader knows; the message names it and says why."""


@dataclass(frozen=True)
class InputFile:
    """One file to read, with what its first bytes told about its format."""

    path: Path
    kind: Literal["text", "parquet"]
    size: int
    compression: Literal["none", "gzip"] = "none"
    header: bool = False
    fields: tuple[str, ...] = ()  # text only: the columns in the order of the file

    @property
    def layout(self) -> tuple[str, str, bool, tuple[str, ...]]:
        """Files of one layout are read by one scan."""
        return (self.kind, self.compression, self.header, self.fields)


def field_name(name: str) -> str:
    """A field as a column: `log-status` and `log_status` are both `log_status`."""
    return name.strip().lower().replace("-", "_")


def discover(paths: Iterable[Path | str | InputFile]) -> list[InputFile]:
    """Every flow-log file under the paths given, files and folders (Hive partitions included)."""
    found: list[InputFile] = []
    for given in paths:
        if isinstance(given, InputFile):
            found.append(given)  # already discovered, as by a command counting files first
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
        elif path.is_file():
            files = [path]
        else:
            raise FormatError(f"{path}: no such file or folder")
        for file in files:
            item = sniff(file)
            if item is not None:
                found.append(item)
    return found


def _hidden(path: Path, root: Path) -> bool:
    """Hidden and marker files in a folder (`.crc`, `_SUCCESS`) are not data, as for Hive."""
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def sniff(path: Path) -> InputFile | None:
    """What one file holds, from its first bytes; None for an empty file."""
    size = path.stat().st_size
    if size == 0:
        return None
    with path.open("rb") as stream:
        head = stream.read(4)
    if head == _PARQUET_MAGIC:
        return InputFile(path=path, kind="parquet", size=size)
    compression: Literal["none", "gzip"] = "gzip" if head[:2] == _GZIP_MAGIC else "none"
    first = _first_line(path, compression)
    if first is None:
        return None
    header, fields = _read_first_line(path, first)
    return InputFile(
        path=path, kind="text", size=size, compression=compression, header=header, fields=fields
    )


def _first_line(path: Path, compression: str) -> str | None:
    try:
        if compression == "gzip":
            with gzip.open(path, "rb") as stream:
                raw = stream.read(_SNIFF_BYTES)
        else:
            with path.open("rb") as stream:
                raw = stream.read(_SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path}: not readable as gzip: {exc}") from exc
    if b"\x00" in raw:
        raise FormatError(f"{path}: not a flow log: neither text, gzip nor Parquet")
    for raw_line in raw.splitlines():
        if raw_line.strip():
            try:
                return raw_line.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise FormatError(f"{path}: not a flow log: not UTF-8 text") from None
    return None


def _read_first_line(path: Path, line: str) -> tuple[bool, tuple[str, ...]]:
    """The columns of a file: its header's fields, or the default format's for a bare record."""
    tokens = line.split()
    if all(_FIELD_NAME.fullmatch(token) for token in tokens) and any(
        field_name(token) in KNOWN_FIELDS for token in tokens
    ):
        fields = tuple(field_name(token) for token in tokens)
        duplicates = sorted({f for f in fields if fields.count(f) > 1})
        if duplicates:
            raise FormatError(f"{path}: the header names {', '.join(duplicates)} twice")
        missing = [f for f in REQUIRED_FIELDS if f not in fields]
        if missing:
            raise FormatError(
                f"{path}: the header lacks the fields the analysis needs: {', '.join(missing)}"
            )
        return True, fields
    if len(tokens) == len(DEFAULT_FIELDS) and tokens[0].isdigit():
        return False, DEFAULT_FIELDS
    raise FormatError(
        f"{path}: not a flow log: no header line and not the default format "
        f"(version 2, {len(DEFAULT_FIELDS)} fields): the first line has {len(tokens)} field(s)"
    )


def batches(
    files: Sequence[InputFile], max_files: int = 256, max_bytes: int = 512 * 1024 * 1024
) -> list[list[InputFile]]:
    """Files grouped by layout into batches, each read by one scan: the unit of progress."""
    by_layout: dict[tuple, list[InputFile]] = {}
    for item in files:
        by_layout.setdefault(item.layout, []).append(item)
    result: list[list[InputFile]] = []
    for group in by_layout.values():
        current: list[InputFile] = []
        size = 0
        for item in group:
            if current and (len(current) >= max_files or size + item.size > max_bytes):
                result.append(current)
                current, size = [], 0
            current.append(item)
            size += item.size
        if current:
            result.append(current)
    return result


def sql_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _file_list(batch: Sequence[InputFile]) -> str:
    return "[" + ", ".join(sql_literal(str(item.path)) for item in batch) + "]"


def text_relation(
    batch: Sequence[InputFile], rejects_table: str = "", rejects_scan: str = ""
) -> str:
    """A SELECT of the standard columns over text files of one layout (DuckDB's read_csv)."""
    first = batch[0]
    columns = ", ".join(
        f"{sql_literal(name)}: {sql_literal(_INTEGER_FIELDS.get(name, 'VARCHAR'))}"
        for name in first.fields
    )
    options = [
        "delim = ' '",
        "quote = ''",
        "escape = ''",
        "nullstr = '-'",
        f"header = {'true' if first.header else 'false'}",
        "auto_detect = false",
        f"compression = {sql_literal('gzip' if first.compression == 'gzip' else 'none')}",
        f"columns = {{{columns}}}",
    ]
    if rejects_table:
        # Bad lines are kept aside, counted and sampled: one broken line never stops a scan.
        options += [
            "store_rejects = true",
            f"rejects_table = {sql_literal(rejects_table)}",
            f"rejects_scan = {sql_literal(rejects_scan)}",
        ]
    else:
        options.append("ignore_errors = true")
    return _standard_select(
        set(first.fields), f"read_csv({_file_list(batch)}, {', '.join(options)})"
    )


def parquet_schema(batch: Sequence[InputFile]) -> str:
    """The query whose rows name the columns of a batch of Parquet files, partitions included."""
    return f"DESCRIBE SELECT * FROM {_parquet_source(batch)}"


def _parquet_source(batch: Sequence[InputFile]) -> str:
    return f"read_parquet({_file_list(batch)}, hive_partitioning = true, union_by_name = true)"


def parquet_relation(batch: Sequence[InputFile], columns: Iterable[str]) -> str:
    """A SELECT of the standard columns over Parquet files, with their Hive partition columns."""
    present = {field_name(name): name for name in columns}
    return _standard_select(set(present), _parquet_source(batch), present)


def _standard_select(present: set[str], source: str, names: dict[str, str] | None = None) -> str:
    names = names or {}
    items = []
    for column, kind in STANDARD_COLUMNS.items():
        if column in present:
            original = names.get(column, column).replace('"', '""')
            value = f'"{original}"'
            if kind == "VARCHAR":
                # Parquet may write a missing value as "-" where text writes it bare.
                value = f"nullif(CAST({value} AS VARCHAR), '-')"
            items.append(f'CAST({value} AS {kind}) AS "{column}"')
        else:
            items.append(f'CAST(NULL AS {kind}) AS "{column}"')
    return f"SELECT {', '.join(items)} FROM {source}"


def missing_required(columns: Iterable[str]) -> list[str]:
    """The fields the analysis needs that a Parquet schema lacks."""
    present = {field_name(name) for name in columns}
    return [name for name in REQUIRED_FIELDS if name not in present]
