"""One JSON line of a given input format to parsed inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from inputs.business import parse_business
from inputs.canal import parse_canal
from inputs.debezium import parse_debezium
from inputs.events import BadInput, Parsed

#: Input format name -> parser of one decoded JSON document.
PARSERS: dict[str, Callable[[Any], list[Parsed]]] = {
    "canal": parse_canal,
    "debezium": parse_debezium,
    "business": parse_business,
}


def parse_line(input_format: str, line: str) -> list[Parsed]:
    """Parse one line; raises BadInput for invalid JSON or a document the format rejects."""
    try:
        parser = PARSERS[input_format]
    except KeyError:
        raise ValueError(f"unknown input format {input_format!r}; use one of {', '.join(PARSERS)}") from None
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise BadInput(f"invalid JSON: {error.msg} at column {error.colno}") from None
    return parser(document)
