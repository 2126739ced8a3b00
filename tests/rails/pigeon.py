"""A third-party rail for tests, registered only through settings."""

from rails.base import Exchange, RailResult


class PigeonRail:
    """A third-party rail: remembers what it was asked, fails when told to."""

    key = "pigeon"
    calls: list = []
    script: list = []  # outcomes to answer, in order; default "submitted"
    charges: dict = {}  # idempotency key -> charge id: a retried key never charges twice

    def is_sandbox(self) -> bool:
        return False

    def submit(self, *, invoice, step):
        PigeonRail.calls.append(("submit", step.idempotency_key, invoice.total_minor))
        answer = PigeonRail.script.pop(0) if PigeonRail.script else "submitted"
        if answer == "crash":
            raise ConnectionError("connection refused")
        if answer == "429":
            return RailResult(
                outcome="failed",
                error="429 Too Many Requests",
                retry_after_seconds=30,
                exchanges=(
                    Exchange(
                        step="submit",
                        method="POST",
                        url="https://pigeon.example/charges",
                        status_code=429,
                        idempotency_key=step.idempotency_key,
                    ),
                ),
            )
        charge = PigeonRail.charges.setdefault(
            step.idempotency_key, f"ch_{len(PigeonRail.charges) + 1}"
        )
        return RailResult(
            outcome=answer,
            external_ids={"charge": charge},
            exchanges=(
                Exchange(
                    step="submit",
                    method="POST",
                    url="https://pigeon.example/charges",
                    request_headers={"Authorization": "Bearer sk_live_secret"},
                    request_body=f'{{"amount": {invoice.total_minor}}}',
                    status_code=200,
                    response_body=f'{{"id": "{charge}"}}',
                    idempotency_key=step.idempotency_key,
                ),
            ),
        )

    def check(self, *, invoice, step):
        PigeonRail.calls.append(("check", step.idempotency_key, invoice.total_minor))
        return RailResult(outcome=PigeonRail.script.pop(0) if PigeonRail.script else "pending")

    def void(self, *, invoice, step):
        return RailResult(outcome="voided")

    def credit(self, *, credit_note, invoice, step):
        return RailResult(outcome="submitted")
