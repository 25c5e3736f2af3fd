"""The demo's job: import the uploaded orders file after the response."""

from __future__ import annotations

import csv
import io
import os
import time
import typing as t

from flask import current_app
from flask import request
from flask import url_for

from flask_offload import current_job
from flask_offload import JobCancelled
from flask_offload.dashboard import public_result

from .extensions import offload
from .services import order_service

#: Progress is reported once per this many rows.
BATCH = 1000


def _count_rows(stream: t.IO[bytes]) -> int:
    """Lines after the header, read in blocks without decoding; rewinds."""
    lines = 0
    last = b"\n"
    while block := stream.read(1 << 20):
        lines += block.count(b"\n")
        last = block[-1:]
    stream.seek(0)
    if last != b"\n":
        lines += 1  # the last line has no newline
    return max(0, lines - 1)


@public_result
@offload.task
def import_orders() -> dict[str, t.Any]:
    """Summarise the uploaded orders file per customer, log the operation
    for the user who uploaded it, and email them the link.

    Runs as a job after the response: ``request.files`` and the
    ``Authorization`` header are those of the upload request. Stops early
    when cancelled (from the dashboard). The result is public
    (:func:`~flask_offload.dashboard.public_result`): the status URL and the
    dashboard show it, and its ``export_url`` as a link.
    """
    upload = request.files["file"]
    total = _count_rows(upload.stream)
    if total == 0:
        raise order_service.InvalidOrders("The file has no order rows.")
    current_job.set_progress(0.0, f"parsed 0 of {total:,} rows")
    # Seconds to pause per batch so that people can watch the progress bar.
    slowdown = float(current_app.config["DEMO_SLOWDOWN"])

    text = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(text)
        summary = order_service.OrderSummary()
        summary.check_columns(reader.fieldnames)
        for row in reader:
            summary.add(row, reader.line_num)
            if summary.rows % BATCH == 0:
                done = summary.rows
                current_job.set_progress(
                    min(1.0, done / total), f"parsed {done:,} of {total:,} rows"
                )
                if current_job.cancel_requested:
                    raise JobCancelled(
                        f"Cancelled after {done:,} of {total:,} rows; nothing"
                        " was exported."
                    )
                if slowdown:
                    time.sleep(slowdown)
    finally:
        # The job's request owns the file and closes it when the job ends.
        text.detach()
    rows = summary.rows
    current_job.set_progress(1.0, f"parsed {rows:,} of {rows:,} rows")

    export_name = f"orders-summary-{current_job.id}.csv"
    summary.write_csv(os.path.join(current_app.config["EXPORT_DIR"], export_name))
    order_service.save_operation_log(
        "import_orders",
        f"Imported {rows} orders from {upload.filename!r}"
        f" for {len(summary.customers)} customers into {export_name}.",
    )
    order_service.send_result_email(export_name, rows)
    return {
        "export": export_name,
        "rows": rows,
        "customers": len(summary.customers),
        "export_url": url_for("download_export", name=export_name),
    }
