"""``tdc flow``: list the declared flows, show one, or validate declarations (the declared ones,
or those of a Python file)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from flows.declaration import FlowDeclaration


def list_flows() -> int:
    """One line per declared flow: its name (marked when TDC_FLOWS runs it), what it reads, what
    it writes."""
    import os

    from flows.declared import DECLARATIONS
    from settings import SettingsError, flow_names

    try:
        running = set(flow_names(os.environ))
    except SettingsError:
        running = set()
    rows = [(flow.name + (" *" if flow.name in running else ""),
             ", ".join([s.name for s in flow.sources] + [b.name for b in flow.business]
                       + [f"{d.table} (dimension {d.name})" for d in flow.dimensions]),
             ", ".join([w.name for w in flow.wide] + [a.name for a in flow.aggregates])) for flow in DECLARATIONS]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'flow':<{width}}  sources -> outputs")
    for name, sources, outputs in rows:
        print(f"{name:<{width}}  {sources}\n{'':<{width}}    -> {outputs}")
    named = ",".join(flow.name for flow in DECLARATIONS if flow.name in running) or "?"
    print(f"* run here (TDC_FLOWS={named}); every declared flow's tables exist")
    return 0


def show_flow(name: str) -> int:
    from flows.declared import BY_NAME
    from flows.describe import describe

    flow = BY_NAME.get(name)
    if flow is None:
        print(f"tdc: no flow {name!r} (declared: {', '.join(BY_NAME)})", file=sys.stderr)
        return 2
    print("\n".join(describe(flow)))
    return 0


def declared_in(path: Path) -> list[FlowDeclaration]:
    """The flow declarations a Python file makes at module level (not those it imports from
    ``flows`` to build on); raises whatever running the file raises (FileNotFoundError when
    there is none)."""
    if not path.is_file():
        raise FileNotFoundError(f"no declaration file {str(path)!r}")
    spec = importlib.util.spec_from_file_location(f"tdc_flow_declaration_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    imported = {id(value) for name, loaded in list(sys.modules.items()) if name.split(".")[0] == "flows"
                for value in vars(loaded).values() if isinstance(value, FlowDeclaration)}
    made = {id(value): value for value in vars(module).values()
            if isinstance(value, FlowDeclaration) and id(value) not in imported}
    return list(made.values())


def validate(file: str | None) -> int:
    """0 when the declarations hold together; 1 with every problem on stderr otherwise."""
    from flows.validation import DeclarationError, problems, problems_across

    if file is None:
        try:
            from flows.declared import DECLARATIONS
        except DeclarationError as error:
            print("\n".join(error.problems), file=sys.stderr)
            return 1
        print(f"ok: {len(DECLARATIONS)} flows hold together ({', '.join(f.name for f in DECLARATIONS)})")
        return 0
    try:
        flows = declared_in(Path(file))
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a declaration file raises is reported as such
        print(f"tdc: {file}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    if not flows:
        print(f"tdc: {file}: no FlowDeclaration at module level", file=sys.stderr)
        return 1
    found = [problem for flow in flows for problem in problems(flow)]
    found += problems_across([*flows, *_declared_beside(flows)])
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    print(f"ok: {', '.join(repr(f.name) for f in flows)} {'holds' if len(flows) == 1 else 'hold'} together")
    return 0


def _declared_beside(flows: list[FlowDeclaration]) -> list[FlowDeclaration]:
    """The declared flows a file's flows must sit beside (not those the file redeclares)."""
    from flows.validation import DeclarationError

    try:
        from flows.declared import DECLARATIONS
    except DeclarationError:
        return []
    names = {flow.name for flow in flows}
    return [flow for flow in DECLARATIONS if flow.name not in names]


def cmd_flow(args: argparse.Namespace) -> int:
    from flows.validation import DeclarationError

    try:
        if args.flow_command == "list":
            return list_flows()
        if args.flow_command == "show":
            return show_flow(args.name)
        return validate(args.file)
    except DeclarationError as error:  # the declared flows themselves do not hold together
        print("\n".join(error.problems), file=sys.stderr)
        return 1


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser("flow", help="the flow declarations: list, show, validate")
    manage = parser.add_subparsers(dest="flow_command", required=True)
    manage.add_parser("list", help="each declared flow: its sources and its outputs")
    show = manage.add_parser("show", help="one flow's declaration, with its state machine drawn as a tree")
    show.add_argument("name")
    check = manage.add_parser("validate", help="check declarations; exit 1 with every problem")
    check.add_argument("file", nargs="?", help="a Python file of FlowDeclaration values (default: the declared flows)")
    parser.set_defaults(run=cmd_flow)
