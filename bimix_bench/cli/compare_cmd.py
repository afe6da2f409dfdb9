"""`bimix-bench compare`: tables across one or more run folders."""

from __future__ import annotations

from pathlib import Path

import typer

from bimix_bench.cli.app import app
from bimix_bench.cli.common import console
from bimix_bench.errors import UsageError


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (or records.jsonl files) to compare."),
    markdown: Path = typer.Option(None, "--markdown", help="Also write the table as Markdown here."),
    csv: Path = typer.Option(None, "--csv", help="Also write the table as CSV here."),
) -> None:
    """Models x tasks: headline quality (mean and 95% CI over seeds), tokens/s, parameters."""
    from bimix_bench.cli.ui import COMPARE_VIEW, records_table
    from bimix_bench.results.records import read_records
    from bimix_bench.results.tables import aggregate, records_frame, to_markdown

    records = []
    for path in run_dirs:
        if not path.exists():
            raise UsageError(f"no such run folder: {path}")
        found = read_records(path)
        if not found:
            raise UsageError(f"no records in {path}")
        records.extend(found)
    table = aggregate(records_frame(records))
    console.print(records_table(table, f"{len(records)} records from {len(run_dirs)} run(s)", COMPARE_VIEW))
    if markdown:
        markdown.write_text(to_markdown(table) + "\n")
        console.print(f"wrote {markdown}")
    if csv:
        table.to_csv(csv, index=False)
        console.print(f"wrote {csv}")
