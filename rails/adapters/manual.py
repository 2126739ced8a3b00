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
            awaits_operator=True,
        )

    def check(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        # Nothing to ask: only an operator knows whether the customer paid.
        return RailResult(outcome="pending", awaits_operator=True)

    def void(self, *, invoice: InvoiceDocument, step: Step) -> RailResult:
        return RailResult(outcome="voided")

    def credit(
        self, *, credit_note: CreditNoteDocument, invoice: InvoiceDocument, step: Step
    ) -> RailResult:
        return RailResult(outcome="submitted", note=f"Credit note {credit_note.number} recorded.")
