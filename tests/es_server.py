"""A small Elasticsearch-compatible HTTP server for the tests: exactly what tdc uses, nothing more.

Elasticsearch cannot run on the test machines.  This server speaks enough of its REST API for
the official client (8.x) to talk to it unchanged: the product header every 2xx response must
carry, the ``compatible-with`` media types, index templates (with ``dynamic: strict`` mappings
enforced), indices, aliases and their atomic ``_aliases`` swap, ``_bulk`` with external
versioning and 409 conflicts, ``_doc``/``_mget`` reads, ``_refresh``, and ``_search`` with the
``bool`` (filter, must, should, must_not), ``term``, ``terms``, ``range`` and ``nested`` queries,
sorting with missing values last, and ``size``/``from``.  Anything else answers 400 with the
request, so a test fails loudly when tdc starts to use more.

Run the same tests against a real server by setting ``TDC_ES_URL`` (see the README).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

VERSION = "8.15.0"


class Refused(Exception):
    def __init__(self, status: int, kind: str, reason: str):
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.kind, "reason": self.reason,
                          "root_cause": [{"type": self.kind, "reason": self.reason}]}, "status": self.status}


@dataclass
class Index:
    mappings: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: id -> (version, source)
    docs: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)


class State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.templates: dict[str, dict[str, Any]] = {}
        self.indices: dict[str, Index] = {}
        self.aliases: dict[str, set[str]] = {}
        #: Requests seen, as (method, path): for tests that check what tdc sent.
        self.requests: list[tuple[str, str]] = []

    def resolve(self, name: str, writing: bool = False) -> list[str]:
        if name in self.indices:
            return [name]
        if name in self.aliases and self.aliases[name]:
            targets = sorted(self.aliases[name])
            if writing and len(targets) > 1:
                raise Refused(400, "illegal_argument_exception", f"alias [{name}] has more than one index")
            return targets
        names = [n for n in self.indices if fnmatch.fnmatchcase(n, name)] if "*" in name else []
        if names:
            return sorted(names)
        raise Refused(404, "index_not_found_exception", f"no such index [{name}]")

    def create(self, name: str, body: dict[str, Any]) -> None:
        if name in self.indices or name in self.aliases:
            raise Refused(400, "resource_already_exists_exception", f"index [{name}] already exists")
        index = Index()
        for template in sorted(self.templates.values(), key=lambda t: t.get("priority", 0)):
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in template["index_patterns"]):
                index.mappings = json.loads(json.dumps(template.get("template", {}).get("mappings", {})))
                index.settings = dict(template.get("template", {}).get("settings", {}))
        if "mappings" in body:
            index.mappings = body["mappings"]
        self.indices[name] = index
        for alias in body.get("aliases", {}):
            self.aliases.setdefault(alias, set()).add(name)


def _check_strict(mappings: dict[str, Any], source: dict[str, Any], where: str = "") -> None:
    if mappings.get("dynamic") != "strict":
        return
    properties = mappings.get("properties", {})
    for name, value in source.items():
        if name not in properties:
            raise Refused(400, "strict_dynamic_mapping_exception",
                          f"mapping set to strict, dynamic introduction of [{name}] within [{where or '_doc'}] "
                          "is not allowed")
        inner = properties[name]
        if inner.get("type") == "nested" and value is not None:
            for item in value if isinstance(value, list) else [value]:
                _check_strict({"dynamic": mappings.get("dynamic"), **inner}, item, name)


def _values(source: Any, path: list[str]) -> list[Any]:
    """Every value at ``path`` (dotted field), looking through lists."""
    if not path:
        return source if isinstance(source, list) else [source]
    if isinstance(source, list):
        return [v for item in source for v in _values(item, path)]
    if not isinstance(source, dict) or path[0] not in source:
        return []
    return _values(source[path[0]], path[1:])


def _comparable(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            pass
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", value):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)
            except ValueError:
                return value
    return value


def _same(a: Any, b: Any) -> bool:
    left, right = _comparable(a), _comparable(b)
    if type(left) is not type(right):
        return str(a) == str(b)
    return bool(left == right)


def _matches(query: dict[str, Any], doc: Any) -> bool:
    if not query or "match_all" in query:
        return True
    [(kind, spec)] = query.items()
    if kind == "bool":
        musts = list(spec.get("filter", [])) + list(spec.get("must", []))
        musts = [q for entry in musts for q in (entry if isinstance(entry, list) else [entry])]
        if not all(_matches(q, doc) for q in musts):
            return False
        if any(_matches(q, doc) for q in spec.get("must_not", [])):
            return False
        shoulds = spec.get("should", [])
        if shoulds and not musts and not any(_matches(q, doc) for q in shoulds):
            return False
        return True
    if kind in ("term", "terms"):
        [(name, wanted)] = spec.items()
        if isinstance(wanted, dict):
            wanted = wanted["value"]
        options = wanted if kind == "terms" else [wanted]
        return any(_same(value, option) for value in _values(doc, name.split(".")) for option in options)
    if kind == "range":
        [(name, bounds)] = spec.items()
        for value in _values(doc, name.split(".")):
            have = _comparable(value)
            ok = True
            for op, bound in bounds.items():
                limit = _comparable(bound)
                if isinstance(have, dt.datetime) and isinstance(limit, dt.datetime) and len(str(bound)) == 10:
                    limit = limit.replace(hour=0)  # a date bound on a date field
                if type(have) is not type(limit):
                    raise Refused(400, "parse_exception", f"cannot compare [{value}] with [{bound}] on [{name}]")
                ok &= {"gte": have >= limit, "gt": have > limit, "lte": have <= limit, "lt": have < limit}.get(
                    op, True)
            if ok:
                return True
        return False
    if kind == "nested":
        path = spec["path"]
        inner = spec["query"]
        # Field names inside are full paths (items.sku_id): match each nested object on its own.
        return any(_matches(inner, {path: item}) for item in _values(doc, path.split(".")))
    if kind == "ids":
        return False  # handled by the caller's _id
    raise Refused(400, "parsing_exception", f"unknown query [{kind}]")


def _sort_key(fields: list[tuple[str, str]], doc: dict[str, Any], doc_id: str) -> list[tuple[int, Any]]:
    key = []
    for name, _ in fields:
        values = _values(doc, name.split(".")) if name != "_id" else [doc_id]
        value = _comparable(values[0]) if values else None
        key.append((value is None, value))
    return key


class Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: Any, head: bool = False) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Elastic-Product", "Elasticsearch")
        accept = self.headers.get("Accept", "")
        mimetype = ("application/vnd.elasticsearch+json;compatible-with=8" if "compatible-with" in accept
                    else "application/json")
        self.send_header("Content-Type", mimetype)
        self.send_header("Content-Length", str(0 if head else len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        # Ids and names arrive percent-encoded (``pos%3APO1``), as Elasticsearch decodes them.
        parts = [unquote(p) for p in url.path.split("/") if p]
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        raw = self._body()
        state = self.state
        with state.lock:
            state.requests.append((method, url.path))
            try:
                status, body = route(state, method, parts, params, raw)
            except Refused as refused:
                status, body = refused.status, refused.body()
        self._send(status, body, head=method == "HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_HEAD(self) -> None:
        self._handle("HEAD")


def _json(raw: bytes) -> dict[str, Any]:
    return json.loads(raw) if raw.strip() else {}


def route(state: State, method: str, parts: list[str], params: dict[str, str], raw: bytes) -> tuple[int, Any]:
    if not parts:
        return 200, {"name": "tdc-test", "cluster_name": "tdc-test", "cluster_uuid": "test",
                     "version": {"number": VERSION, "build_flavor": "default", "lucene_version": "9.11.1",
                                 "minimum_wire_compatibility_version": "7.17.0",
                                 "minimum_index_compatibility_version": "7.0.0"},
                     "tagline": "You Know, for Search"}
    if parts[0] == "_index_template" and len(parts) == 2:
        if method == "PUT" or method == "POST":
            state.templates[parts[1]] = _json(raw)
            return 200, {"acknowledged": True}
        if method == "DELETE":
            if state.templates.pop(parts[1], None) is None:
                raise Refused(404, "resource_not_found_exception", f"index template matching [{parts[1]}] not found")
            return 200, {"acknowledged": True}
        if method == "GET":
            if parts[1] not in state.templates:
                raise Refused(404, "resource_not_found_exception", f"index template matching [{parts[1]}] not found")
            return 200, {"index_templates": [{"name": parts[1], "index_template": state.templates[parts[1]]}]}
    if parts[0] == "_aliases" and method == "POST":
        actions = _json(raw)["actions"]
        aliases = {name: set(targets) for name, targets in state.aliases.items()}
        for action in actions:
            [(kind, spec)] = action.items()
            indices = [spec["index"]] if "index" in spec else spec["indices"]
            for index in indices:
                if index not in state.indices:
                    raise Refused(404, "index_not_found_exception", f"no such index [{index}]")
                if kind == "add":
                    aliases.setdefault(spec["alias"], set()).add(index)
                elif kind == "remove":
                    if index not in aliases.get(spec["alias"], set()):
                        raise Refused(404, "aliases_not_found_exception", f"aliases [{spec['alias']}] missing")
                    aliases[spec["alias"]].discard(index)
                elif kind == "remove_index":
                    del state.indices[index]
                else:
                    raise Refused(400, "illegal_argument_exception", f"unknown alias action [{kind}]")
        state.aliases = {name: targets for name, targets in aliases.items() if targets}  # all or nothing
        return 200, {"acknowledged": True}
    if parts[0] == "_alias" and len(parts) == 2:
        targets = state.aliases.get(parts[1])
        if not targets:
            return 404, {"error": f"alias [{parts[1]}] missing", "status": 404}
        return 200, {index: {"aliases": {parts[1]: {}}} for index in sorted(targets)}
    if parts[0] == "_bulk" or (len(parts) == 2 and parts[1] == "_bulk"):
        return 200, _bulk(state, parts[0] if parts[0] != "_bulk" else None, raw,
                          params.get("require_alias") == "true")
    if parts[0] == "_mget" or (len(parts) == 2 and parts[1] == "_mget"):
        body = _json(raw)
        default = parts[0] if parts[0] != "_mget" else None
        wanted = [{"_index": default, "_id": i} for i in body.get("ids", [])] + body.get("docs", [])
        return 200, {"docs": [_get(state, w.get("_index") or default or "", w["_id"]) for w in wanted]}
    name = parts[0]
    if len(parts) == 1:
        if method == "PUT":
            state.create(name, _json(raw))
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}
        if method == "HEAD":
            return (200 if name in state.indices or name in state.aliases else 404), None
        if method == "DELETE":
            for index in state.resolve(name):
                del state.indices[index]
                for targets in state.aliases.values():
                    targets.discard(index)
            state.aliases = {n: t for n, t in state.aliases.items() if t}
            return 200, {"acknowledged": True}
        if method == "GET":
            return 200, {index: {"aliases": {a: {} for a, t in state.aliases.items() if index in t},
                                 "mappings": state.indices[index].mappings,
                                 "settings": {"index": state.indices[index].settings}}
                         for index in state.resolve(name)}
    if len(parts) == 2 and parts[1] == "_refresh":
        state.resolve(name)
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
    if len(parts) == 2 and parts[1] == "_mapping" and method == "GET":
        return 200, {index: {"mappings": state.indices[index].mappings} for index in state.resolve(name)}
    if len(parts) == 2 and parts[1] in ("_search", "_count"):
        body = _json(raw)
        hits = _search(state, name, body, params)
        if parts[1] == "_count":
            return 200, {"count": len(hits), "_shards": {"total": 1, "successful": 1, "failed": 0}}
        start = int(body.get("from", params.get("from", 0)))
        size = int(body.get("size", params.get("size", 10)))
        return 200, {"took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                     "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": None,
                              "hits": hits[start:start + size]}}
    if len(parts) == 3 and parts[1] == "_doc" and method == "DELETE":
        [index] = state.resolve(name, writing=True)
        outcome = _write(state, index, "delete", parts[2], {}, None)
        return outcome["status"], outcome
    if len(parts) == 3 and parts[1] == "_doc" and method in ("GET", "HEAD"):
        found = _get(state, name, parts[2])
        return (200 if found["found"] else 404), found
    raise Refused(400, "illegal_argument_exception", f"the test server does not implement {method} /{'/'.join(parts)}")


def _get(state: State, name: str, doc_id: str) -> dict[str, Any]:
    for index in state.resolve(name):
        if doc_id in state.indices[index].docs:
            version, source = state.indices[index].docs[doc_id]
            return {"_index": index, "_id": doc_id, "_version": version, "_seq_no": 0, "_primary_term": 1,
                    "found": True, "_source": source}
    return {"_index": name, "_id": doc_id, "found": False}


def _search(state: State, name: str, body: dict[str, Any], params: dict[str, str]) -> list[dict[str, Any]]:
    query = body.get("query", {})
    found = []
    for index in state.resolve(name):
        for doc_id, (version, source) in state.indices[index].docs.items():
            if _matches(query, source):
                found.append((index, doc_id, version, source))
    fields: list[tuple[str, str]] = []
    for entry in body.get("sort", []):
        if isinstance(entry, str):
            fields.append((entry, "asc"))
        else:
            [(name_, spec)] = entry.items()
            fields.append((name_, spec if isinstance(spec, str) else spec.get("order", "asc")))
    for position in range(len(fields) - 1, -1, -1):  # stable sorts, last field first
        field_name, way = fields[position]
        present = [f for f in found if _sort_key([fields[position]], f[3], f[1])[0][0] is False]
        missing = [f for f in found if f not in present]
        present.sort(key=lambda f: _sort_key([fields[position]], f[3], f[1])[0][1], reverse=way == "desc")
        found = present + missing  # missing values last either way
    return [{"_index": index, "_id": doc_id, "_version": version, "_score": None, "_source": source,
             "sort": [str(v[1]) if v[1] is not None else None for v in _sort_key(fields, source, doc_id)]}
            for index, doc_id, version, source in found]


def _bulk(state: State, default: str | None, raw: bytes, require_alias: bool = False) -> dict[str, Any]:
    lines = [line for line in raw.decode().split("\n") if line.strip()]
    items: list[dict[str, Any]] = []
    position = 0
    while position < len(lines):
        action = json.loads(lines[position])
        [(kind, meta)] = action.items()
        position += 1
        source = json.loads(lines[position]) if kind in ("index", "create", "update") else None
        if source is not None:
            position += 1
        name = meta.get("_index", default)
        doc_id = str(meta["_id"])
        try:
            if require_alias and name not in state.aliases:
                raise Refused(404, "index_not_found_exception", f"[{name}] is not an alias (require_alias)")
            [index] = state.resolve(name, writing=True)
            items.append({kind: _write(state, index, kind, doc_id, meta, source)})
        except Refused as refused:
            items.append({kind: {"_index": name, "_id": doc_id, "status": refused.status,
                                 "error": {"type": refused.kind, "reason": refused.reason}}})
    return {"took": 1, "errors": any("error" in next(iter(i.values())) for i in items), "items": items}


def _write(state: State, index: str, kind: str, doc_id: str, meta: dict[str, Any],
           source: dict[str, Any] | None) -> dict[str, Any]:
    docs = state.indices[index].docs
    current = docs.get(doc_id)
    external = meta.get("version_type") in ("external", "external_gte")
    if kind == "delete":
        if current is None:
            return {"_index": index, "_id": doc_id, "result": "not_found", "status": 404}
        del docs[doc_id]
        return {"_index": index, "_id": doc_id, "result": "deleted", "status": 200}
    if kind != "index":
        raise Refused(400, "illegal_argument_exception", f"bulk [{kind}] is not implemented by the test server")
    assert source is not None
    _check_strict(state.indices[index].mappings, source)
    if external:
        version = int(meta["version"])
        if current is not None and (version < current[0] if meta["version_type"] == "external_gte"
                                    else version <= current[0]):
            raise Refused(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, current version [{current[0]}] is higher or equal to "
                          f"the one provided [{version}]")
    else:
        version = (current[0] + 1) if current else 1
    docs[doc_id] = (version, source)
    return {"_index": index, "_id": doc_id, "_version": version, "result": "updated" if current else "created",
            "status": 200 if current else 201, "_seq_no": 0, "_primary_term": 1}


class TestServer:
    """The server on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self) -> None:
        self.state = State()
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> TestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.state.lock:
            self.state.templates.clear()
            self.state.indices.clear()
            self.state.aliases.clear()
            self.state.requests.clear()
