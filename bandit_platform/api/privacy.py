"""`POST /v1/customers/consent-withdrawals`: a customer withdrew consent; erase their context.

Scope `decide`: the app that asks for decisions is the one that hears the customer withdraw.
The erasure covers the customer's decisions in every experiment, whichever app logged them
(see `service.privacy`). The customer id travels in the body, never in the path, so that it
never reaches an access log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.auth import api_key_guard, provide_identity
from bandit_platform.domain.access import AppIdentity
from bandit_platform.service.privacy import MAX_CUSTOMER_ID, ConsentService


class ConsentWithdrawalBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The customer who withdrew consent to personalisation (the bank's own id)."""

    customer_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CUSTOMER_ID)]


class ConsentWithdrawalResponseBody(msgspec.Struct, kw_only=True):
    """How many of the customer's decisions had their context erased now (0 when none
    were left: an unknown customer, or a repeated withdrawal)."""

    withdrawal_id: int
    decisions_erased: int
    withdrawn_at: datetime


class ConsentController(Controller):
    """Consent withdrawals: erase a customer's stored context in every experiment."""

    path = "/v1/customers"
    tags = ["privacy"]
    guards = [api_key_guard]
    dependencies = {"app_identity": Provide(provide_identity, sync_to_thread=False)}

    @post(
        "/consent-withdrawals",
        opt={"scope": "decide"},
        sync_to_thread=True,
        status_code=HTTP_200_OK,
    )
    def withdraw(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ConsentWithdrawalBody],
        app_identity: NamedDependency[AppIdentity],
    ) -> ConsentWithdrawalResponseBody:
        """Erase the context of every decision logged for the customer (idempotent)."""
        service = ConsentService(request.app.state.platform)
        withdrawal = service.withdraw(data.customer_id, app_identity)
        return ConsentWithdrawalResponseBody(
            withdrawal_id=withdrawal.withdrawal_id,
            decisions_erased=withdrawal.decisions_erased,
            withdrawn_at=withdrawal.withdrawn_at,
        )
