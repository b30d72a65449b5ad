"""``tdc order show`` and ``tdc quarantine list``: what tdc knows, read straight from storage."""

from __future__ import annotations

from chain.lineage import attempt_line, order_lineage, recent_quarantine
from chain.wide_rows import to_json
from models.storage import get_storage


def show_order(order_id: str, as_json: bool = False) -> int:
    lineage = order_lineage(get_storage(), order_id)
    if as_json:
        print(to_json(lineage))
        return 0
    print(f"order {order_id}  (shard {lineage['shard']}, database {lineage['database']})")
    print("\nmetadata:")
    for m in lineage["metadata"]:
        print(f"  {m['source']:<28} {m['unique_key']:<20} {m['operation_type']:<9} {m['kind']:<7} @ {m['at']}")
    print("\ntasks:")
    for t in lineage["tasks"]:
        error = f"  ({t['last_error']})" if t["last_error"] else ""
        print(f"  {t['operation_type']:<9} {t['status']:<8} version {t['version']} done {t['done_version']} "
              f"attempts {t['attempts']}{error}")
        for waited in t["history"]:
            print(f"      {attempt_line(waited)}")
    print("\nsnapshots:")
    for s in lineage["snapshots"]:
        print(f"  {s['operation_type']:<9} task version {s['task_version']} at {s['taken_at']}")
    print(f"\n{lineage['root_table']} (flow {lineage['flow']}):")
    for key, value in (lineage["dwd_order"] or {}).items():
        print(f"  {key:<16} {value}")
    if lineage["child_table"]:
        print(f"\n{lineage['child_table']}: {len(lineage['dwd_order_item'])} rows")
        for item in lineage["dwd_order_item"]:
            print("  " + ", ".join(f"{key}={value}" for key, value in item.items()))
    for title in ("quarantine", "failed"):
        if lineage[title]:
            print(f"\n{title}:")
            for entry in lineage[title]:
                print(f"  {entry.get('reason')}")
    return 0


def list_quarantine(limit: int = 50) -> int:
    entries = recent_quarantine(get_storage(), limit)
    for entry in entries:
        print(f"{entry['received_at']:%Y-%m-%d %H:%M:%S} {entry['input_format']:<9} "
              f"{entry['order_id'] or '-':<24} {entry['reason']}")
        print(f"    {entry['raw'][:160]}")
    print(f"{len(entries)} shown")
    return 0
