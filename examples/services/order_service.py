"""Orders: summarise an import, log who did it, and tell them by email.

Ordinary request-bound service code: :func:`save_operation_log` asks
:class:`~examples.libs.passport.PassportService` who the caller is, which
reads the request's ``Authorization`` header, and :func:`send_result_email`
builds an absolute link with ``url_for``. Called from a job, both see the
request the job was submitted from.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import typing as t
from datetime import datetime
from datetime import timezone
from decimal import Decimal
from decimal import InvalidOperation
from email.message import EmailMessage

from flask import current_app
from flask import url_for

from ..db import get_db
from ..libs.passport import PassportService

#: The columns an orders file must have.
REQUIRED_COLUMNS = ("order_id", "customer", "quantity", "unit_price")
#: The columns of the summary export, in order.
EXPORT_COLUMNS = ("customer", "orders", "units", "revenue")

_CENT = Decimal("0.01")


class InvalidOrders(ValueError):
    """The uploaded file is not a valid orders file."""


@dataclasses.dataclass
class CustomerTotals:
    """What one customer ordered in an import."""

    orders: int = 0
    units: int = 0
    revenue: Decimal = Decimal(0)


class OrderSummary:
    """Totals per customer, built one row at a time."""

    def __init__(self) -> None:
        self.customers: dict[str, CustomerTotals] = {}
        self.rows = 0

    @staticmethod
    def check_columns(columns: t.Sequence[str] | None) -> None:
        """Check that the header names every required column.

        :raises InvalidOrders: A column is missing.
        """
        missing = [c for c in REQUIRED_COLUMNS if c not in (columns or ())]
        if missing:
            raise InvalidOrders(
                f"The file has no {', '.join(repr(c) for c in missing)} column."
                " An orders file needs a header row with:"
                f" {', '.join(REQUIRED_COLUMNS)}."
            )

    def add(self, row: dict[str, str], line: int) -> None:
        """Count one order row.

        :param row: The row, by column name.
        :param line: Its line number in the file, for error messages.
        :raises InvalidOrders: A value is not valid.
        """
        customer = (row.get("customer") or "").strip()
        if not customer:
            raise InvalidOrders(f"Line {line}: the customer is empty.")
        try:
            quantity = int(row["quantity"])
            unit_price = Decimal(row["unit_price"])
        except (TypeError, ValueError, InvalidOperation):
            raise InvalidOrders(
                f"Line {line}: the quantity must be a whole number and the"
                f" unit price a decimal number, not {row.get('quantity')!r} and"
                f" {row.get('unit_price')!r}."
            ) from None
        totals = self.customers.get(customer)
        if totals is None:
            totals = self.customers[customer] = CustomerTotals()
        totals.orders += 1
        totals.units += quantity
        totals.revenue += quantity * unit_price
        self.rows += 1

    def write_csv(self, path: str) -> None:
        """Write the summary, one row per customer sorted by name.

        Written to a temporary name and renamed, so a download never sees
        half a file.
        """
        tmp = f"{path}.part"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            for customer in sorted(self.customers):
                totals = self.customers[customer]
                writer.writerow(
                    (
                        customer,
                        totals.orders,
                        totals.units,
                        totals.revenue.quantize(_CENT),
                    )
                )
        os.replace(tmp, path)


def save_operation_log(action: str, detail: str) -> int:
    """Record that the current user did ``action``.

    :return: The new log row's id.
    :raises Unauthorized: The request has no valid bearer token.
    """
    user_id = PassportService.current_user_id()
    db = get_db()
    cursor = db.execute(
        "INSERT INTO operation_log (user_id, action, detail, created_at)"
        " VALUES (?, ?, ?, ?)",
        (user_id, action, detail, datetime.now(timezone.utc).isoformat()),
    )
    db.commit()
    return t.cast(int, cursor.lastrowid)


def send_result_email(export_name: str, rows: int) -> str:
    """ "Email" the current user a link to their export.

    The demo has no mail server: the message is written as an ``.eml`` file
    into the outbox folder, where any mail client can open it.

    :return: The path of the written message.
    """
    user = PassportService.current_user()
    link = url_for("download_export", name=export_name, _external=True)
    msg = EmailMessage()
    msg["From"] = "orders@example.com"
    msg["To"] = user.email
    msg["Subject"] = f"Your orders import is ready: {export_name}"
    msg.set_content(
        f"Hello {user.name},\n\n"
        f"Your import of {rows:,} orders is done. The summary per customer,"
        f" {export_name}, is ready:\n\n{link}\n",
        cte="8bit",
    )
    outbox = current_app.config["OUTBOX_DIR"]
    path = os.path.join(outbox, os.path.splitext(export_name)[0] + ".eml")
    with open(path, "wb") as f:
        f.write(bytes(msg))
    return path
