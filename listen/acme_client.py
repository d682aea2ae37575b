"""ACME (RFC 8555) HTTP-01 issuance: the only module that imports the `acme` library.

`issue` orders one certificate, publishes each HTTP-01 key authorization through
`publish(token, answer)` (listen writes it to etcd, where every listener's responder
reads it), lets the CA validate, and returns the chain and its new key.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass

import josepy as jose
from acme import challenges, client, crypto_util, errors, messages
from josepy.jwa import RS256
from josepy.jwk import JWK, JWKRSA

from buoy.listen.certs import new_key_pem

log = logging.getLogger(__name__)

USER_AGENT = "buoy-listen"
ORDER_TIMEOUT = 90.0  # seconds for the CA to validate and issue


class AcmeError(Exception):
    """The CA refused or could not be reached; the message says which."""


@dataclass(frozen=True)
class Issued:
    chain_pem: str  # leaf first
    key_pem: str


class AcmeClient:
    """One account at one ACME directory."""

    def __init__(self, directory_url: str, account_key_pem: str, *, email: str | None = None,
                 ca_bundle: str | None = None, timeout: float = 30.0) -> None:
        self.directory_url = directory_url
        self.email = email
        self.verify: bool | str = ca_bundle or True
        self.timeout = timeout
        key = JWK.load(account_key_pem.encode())
        if not isinstance(key, JWKRSA):
            raise AcmeError("the ACME account key must be RSA")
        self.key = key
        self._client: client.ClientV2 | None = None

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        # verify_ssl goes to requests' `verify`: a CA bundle path works (typed as bool)
        net = client.ClientNetwork(self.key, alg=RS256, verify_ssl=self.verify,  # type: ignore[arg-type]
                                   user_agent=USER_AGENT, timeout=int(self.timeout))
        directory = client.ClientV2.get_directory(self.directory_url, net)
        acme = client.ClientV2(directory, net)
        reg = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
        try:
            regr = acme.new_account(reg)
        except errors.ConflictError as exc:  # the key has an account already: use it
            regr = acme.query_registration(messages.RegistrationResource(
                uri=exc.location, body=messages.Registration()))
        net.account = regr
        self._client = acme
        return acme

    def issue(self, names: list[str], publish: Callable[[str, str], None],
              withdraw: Callable[[str], None]) -> Issued:
        """Order, answer HTTP-01 for each name, finalize; raises AcmeError."""
        tokens: list[str] = []
        try:
            acme = self._connect()
            key_pem = new_key_pem("ec").encode()
            order = acme.new_order(crypto_util.make_csr(key_pem, names))
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # the CA reuses a recent validation
                challb = next((c for c in authz.body.challenges
                               if isinstance(c.chall, challenges.HTTP01)), None)
                if challb is None:
                    raise AcmeError(f"{authz.body.identifier.value}: the CA offers no HTTP-01")
                response, validation = challb.response_and_validation(self.key)
                token = challb.chall.encode("token")
                publish(token, validation)  # before the CA is told: it validates at once
                tokens.append(token)
                acme.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
            order = acme.poll_and_finalize(order, deadline)
            return Issued(order.fullchain_pem, key_pem.decode())
        except AcmeError:
            self._client = None
            raise
        except (errors.Error, messages.Error, OSError, ValueError, jose.errors.Error) as exc:
            self._client = None  # connect again next time (the CA may have restarted)
            raise AcmeError(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:  # requests' errors and the like: the CA is unreachable
            self._client = None
            raise AcmeError(f"{type(exc).__name__}: {exc}") from None
        finally:
            for token in tokens:
                withdraw(token)
