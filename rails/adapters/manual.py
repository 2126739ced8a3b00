"""The manual rail: the invoice is sent to the customer and an operator marks it paid."""

from __future__ import annotations

from rails.base import CreditNoteDocument, InvoiceDocument, RailResult, Step


class ManualRail:
    key = "manual"

    def is_sandbox(self) -> bool:
        return False

    def submit(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        return RailResult(
            outcome="submitted",
            note="Awaiting payment; an operator marks it paid.",
            next_check_at=None,
        )

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        return RailResult(
            outcome="pending", next_check_at=step.now.replace(year=step.now.year + 10)
        )

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        return RailResult(outcome="voided")

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        return RailResult(outcome="submitted", note=f"Credit note {credit_note.number} recorded.")
