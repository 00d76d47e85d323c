"""A consumer process for the crash tests (run as a script, not collected by pytest).

``python sink_worker.py DB OWNER LEASE_S [HANG_AFTER]`` claims the items of sink
``numbers`` for consumer ``squarer`` one at a time; for each it writes a marker row and
the ack in one transaction, printing ``claimed ID`` and ``acked ID`` as it goes. With
HANG_AFTER it stops working (sleeps forever, the claim held) on the claim after that many
acks, so the test can kill it mid-item. It exits once the sink has nothing left for it.
"""

from __future__ import annotations

import sys
import time

from agentos.sinks import SinkStore
from agentos.store import Atomic, Insert, Store


def main(db: str, owner: str, lease_s: float, hang_after: int | None) -> None:
    acked = 0
    with Store(db) as store, SinkStore(store, owner=owner) as sinks:
        while True:
            items = sinks.claim("numbers", "squarer", lease_s=lease_s)
            if not items:
                if sinks.depth("numbers", "squarer") == 0:
                    return
                time.sleep(0.05)
                continue
            [item] = items
            print(f"claimed {item.id}", flush=True)
            if hang_after is not None and acked == hang_after:
                time.sleep(3600)
            marker = {
                "item_id": item.id,
                "square": item.data["n"] ** 2,
                "worker": owner,
                "attempts": item.attempts,
            }
            store.submit(
                Atomic(
                    (
                        Insert("markers", marker),
                        sinks.ack_op(item.id, "squarer", run_id=f"{owner}:{item.id}"),
                    )
                )
            )
            store.flush()
            acked += 1
            print(f"acked {item.id}", flush=True)


if __name__ == "__main__":
    hang = int(sys.argv[4]) if len(sys.argv) > 4 else None
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), hang)
