"""Three declared flows in one worker fleet: the online orders, the tills (``pos``) and Kingdee
sales orders (``sal_order``) share the task tables, leases, queues and workers, and each comes
out exactly as its history says, with nothing of one in another's tables."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.flow_run import flow_problems
from demo.flows import pos, sal_order
from demo.history import generate_history
from demo.processes import running, start_beat, start_worker
from tests.e2e.helpers import run_tdc, wait_until_matching, worker_env

pytestmark = pytest.mark.e2e


def test_three_flows_ingested_at_once_through_one_fleet_each_come_out_exact(
        fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given fresh MariaDB shards and a PostgreSQL warehouse, workers running gqsh, pos and sal_order
    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_FLOWS="gqsh,pos,sal_order",
                     TDC_SOURCE_DATABASES="gqsh,gqsh_pos,jd_erp")
    orders = generate_history(150, seed=31)
    sales = pos.generate(120, seed=32)
    documents = sal_order.generate(80, seed=33, input_format="debezium")
    # (the histories share store and SKU master rows: the tills' copy of dim_store_shop is the same table)
    files = {
        "orders": ("canal", [line for fmt, line in orders.lines if fmt == "canal"]),
        "payments": ("business", [line for fmt, line in orders.lines if fmt == "business"]),
        "sales": ("canal", [line for _, line in sales.lines]),
        "documents": ("debezium", [line for _, line in documents.lines]),
    }
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        # When each flow's lines are ingested by processes running at the same time
        started = []
        for name, (fmt, lines) in files.items():
            path = tmp_path / f"{name}.jsonl"
            path.write_text("\n".join(lines) + "\n")
            started.append(subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--format", fmt, str(path)],
                                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [process.communicate(timeout=300) for process in started]
        assert [process.returncode for process in started] == [0] * len(started), [err for _, err in outputs]
        quarantined = sum(int(out.split(" quarantined")[0].rsplit(" ", 1)[-1]) for out, _ in outputs)
        # Then every malformed line of every flow is quarantined, and nothing else
        assert quarantined == orders.malformed + sales.malformed + documents.malformed
        # And each flow's wide rows and ADS cells are exactly what its history says
        problems = wait_until_matching(storage, orders, 300)
        deadline = time.monotonic() + 120
        others = flow_problems(sales, {}, storage) + flow_problems(documents, {}, storage)
        while others and time.monotonic() < deadline:
            time.sleep(1)
            others = flow_problems(sales, {}, storage) + flow_problems(documents, {}, storage)
    if problems or others:
        print((tmp_path / "worker.log").read_text()[-4000:])
    assert problems == []
    assert others == []
    # And `tdc order show` finds a till sale by its entity id
    shown = run_tdc(env, "order", "show", f"pos:{next(iter(sales.expected['dwd_gqsh_pos_order_t_order_info']))}")
    assert shown.returncode == 0 and "PAY" in shown.stdout, shown.stderr
