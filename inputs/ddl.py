"""Which tables a DDL statement changes, read from its text (binlog query events and Debezium
schema-change events carry the statement, not a parsed form)."""

from __future__ import annotations

import re

_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*|#[^\n]*", re.DOTALL)
_NAME = r"(?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?"
_STATEMENTS = [
    re.compile(rf"^\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+(?:IF\s+EXISTS\s+)?(?P<names>{_NAME})", re.I),
    re.compile(rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
               rf"(?P<names>{_NAME})", re.I),
    re.compile(rf"^\s*DROP\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+EXISTS\s+)?(?P<names>{_NAME}(?:\s*,\s*{_NAME})*)",
               re.I),
    re.compile(rf"^\s*TRUNCATE\s+(?:TABLE\s+)?(?P<names>{_NAME})", re.I),
    re.compile(rf"^\s*RENAME\s+TABLES?\s+(?P<names>{_NAME}\s+TO\s+{_NAME}(?:\s*,\s*{_NAME}\s+TO\s+{_NAME})*)", re.I),
]
_ONE_NAME = re.compile(_NAME)


def _split(name: str, default_schema: str) -> tuple[str, str]:
    parts = [part.strip().strip("`") for part in name.split(".")]
    return (parts[0], parts[1]) if len(parts) == 2 else (default_schema, parts[0])


def ddl_tables(sql: str, default_schema: str) -> list[tuple[str, str]]:
    """(schema, table) of every table ``sql`` creates, alters, drops, truncates or renames
    (both names of a rename); empty for any other statement."""
    text = _COMMENTS.sub(" ", sql)
    for pattern in _STATEMENTS:
        match = pattern.match(text)
        if match:
            names = [n for n in _ONE_NAME.findall(match.group("names")) if n.upper() != "TO"]
            return [_split(name, default_schema) for name in names]
    return []
