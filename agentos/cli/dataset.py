"""``dataset``: training data from the answers agents accepted."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentos.cli.common import (
    DbOption,
    JsonOption,
    SinceOption,
    err_console,
    existing_database,
)

dataset_app = typer.Typer(
    help="Training data from the record: the answers agents accepted, as fine-tuning JSONL.",
    no_args_is_help=True,
)


@dataset_app.command("export")
def dataset_export(
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", metavar="NAME", help="Only this agent's runs (repeatable)."),
    ] = None,
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run", metavar="RUN_ID", help="Only this run (a unique prefix will do; repeatable)."
        ),
    ] = None,
    since: SinceOption = None,
    first_try: Annotated[
        bool,
        typer.Option("--first-try", help="Only answers accepted without a re-ask."),
    ] = False,
    pairs: Annotated[
        bool,
        typer.Option(
            "--pairs",
            help="Write preference pairs (OpenAI DPO format): each rejected answer with an "
            "answer accepted for the same conversation.",
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write here, not stdout.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write the validated answers of the chosen agents and runs as chat-format JSONL (the
    OpenAI fine-tuning shape): the system prompt, the rendered prompt and the accepted
    answer, de-duplicated, streamed. The counts go to stderr (as JSON with --json)."""
    from agentos.errors import SpecError
    from agentos.store import Store, queries
    from agentos.store.dataset import DatasetReport, export_dataset
    from agentos.store.export import TextSink, parse_since

    since_ts = parse_since(since) if since else None
    db_path = existing_database(db)
    with Store(db_path, readonly=True) as store:
        if agent:
            known = {row[0] for row in store.db.execute("SELECT DISTINCT agent FROM runs")}
            for name in agent:
                if name not in known:
                    listed = ", ".join(sorted(known)) or "none yet"
                    raise SpecError(
                        f"--agent {name!r}: no runs of this agent in {db_path} "
                        f"(agents with runs: {listed})"
                    )
        run_ids: list[str] | None = None
        if run:
            run_ids = []
            for prefix in run:
                found = queries.get_run(store, prefix)
                if found is None:
                    raise SpecError(f"--run {prefix!r}: no run has this id or id prefix")
                run_ids.append(found["id"])

        def write(out: TextSink) -> DatasetReport:
            return export_dataset(
                store,
                out=out,
                agents=agent,
                run_ids=run_ids,
                since=since_ts,
                first_try=first_try,
                pairs=pairs,
            )

        if output is None:
            report = write(sys.stdout)
        else:
            with open(output, "w", encoding="utf-8") as file:
                report = write(file)
    if as_json:
        err_console.print_json(json.dumps(report.to_json()))
        return
    what = "preference pairs" if pairs else "examples"
    where = f" to {output}" if output is not None else ""
    summary = (
        f"wrote {report.examples} {what} from {report.runs} runs{where}"
        f" ({report.duplicates} duplicates left out)"
    )
    err_console.print(summary)
