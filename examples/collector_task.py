"""The function behind examples/collector.yaml: a collector, run once per scheduled hour.

Each run lists the files of a folder (one item per file, keyed by its name) and asks the
model for a one-line note about the listing (one more item, keyed ``summary``). agentos
stores every item under (agent, period, key), so a second run in the same hour stores
nothing twice; the next hour is a new period and stores a new snapshot.

A plain function: agentos runs it in a worker thread, so it asks the model with
``context.ask_sync``. agentos imports it as ``collector_task`` because the agents file's
folder is searched first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def collect(folder: str, pattern: str, context: Any) -> list[dict[str, Any]]:
    """One item per file in ``folder`` matching ``pattern``, and a summary by the model."""
    base = Path(context.base_dir or ".")
    root = (base / folder).resolve()
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    items: list[dict[str, Any]] = [
        {
            "id": path.name,
            "bytes": path.stat().st_size,
            "lines": len(path.read_text(errors="replace").splitlines()),
        }
        for path in files
    ]
    context.log(f"{len(items)} files matching {pattern} in {root}", period=context.period)
    listing = ", ".join(item["id"] for item in items) or "no files"
    note = context.ask_sync(f"In one short sentence, describe this list of files: {listing}")
    items.append({"id": "summary", "files": len(items), "note": note.strip()})
    return items
