"""One ACME order, start to finish, with the ``acme`` library (certbot's) and ``josepy``.

Runs in the ACME process only (blocking HTTP). The account key is kept in the state
directory; challenges are published as files there, where the listeners (TLS-ALPN-01) and
the HTTP-01 responder of every instance sharing the directory find them.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import time
from typing import Any, cast

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from tunnel import __version__
from tunnel.config.acme import AcmeSettings
from tunnel.tls.acme.challenge import challenge_pem
from tunnel.tls.acme.store import StateDir, remove, write_private
from tunnel.tls.selfsigned import key_pem, new_key

log = logging.getLogger("tunnel.acme")

ORDER_TIMEOUT = 90.0


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737's challenge (the ``acme`` library no longer ships it)."""

    typ = "tls-alpn-01"

    def validation(self, account_key: JWK, **_kwargs: Any) -> str:
        """The key authorization; its SHA-256 goes into the challenge certificate."""
        return str(self.key_authorization(account_key))


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) response that asks the server to validate."""

    typ = "tls-alpn-01"


TLSALPN01.response_cls = TLSALPN01Response


class OrderError(Exception):
    """An order failed; the message says why, ``retry_after`` when the server said when."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(text: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None if absent or bad."""
    if not text:
        return None
    text = text.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


class _Network(client.ClientNetwork):
    """The library's HTTP layer, remembering the server's last refusal's Retry-After."""

    retry_after: float | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        response = super()._send_request(method, url, *args, **kwargs)
        if response.status_code in (429, 503):
            self.retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return response


def _account_key(state: StateDir) -> JWKEC:
    try:
        with open(state.account, "rb") as stream:
            return JWKEC.json_loads(stream.read())
    except FileNotFoundError:
        pass
    key = JWKEC(key=new_key())
    write_private(state.account, key.json_dumps().encode())
    log.info("acme: new account key in %s", state.account)
    return key


class AcmeClient:
    """Talks to one ACME directory on behalf of one state directory."""

    def __init__(self, settings: AcmeSettings) -> None:
        self.settings = settings
        self.state = StateDir(settings.state_dir)
        self._client: client.ClientV2 | None = None
        self._net: _Network | None = None
        self._key: JWKEC | None = None

    def _connect(self) -> tuple[client.ClientV2, JWKEC]:
        if self._client is not None and self._key is not None:
            return self._client, self._key
        key = _account_key(self.state)
        # requests takes a CA file path where the library's hint says bool.
        verify = cast(bool, self.settings.ca_file or True)
        net = _Network(key, alg=ES256, verify_ssl=verify, user_agent=f"tunnel/{__version__}")
        directory = client.ClientV2.get_directory(self.settings.directory, net)
        acme = client.ClientV2(directory, net)
        contact = (f"mailto:{self.settings.email}",) if self.settings.email else ()
        registration = messages.NewRegistration(contact=contact, terms_of_service_agreed=True)
        try:
            acme.new_account(registration)
        except errors.ConflictError as exc:  # the key has an account already: use it
            net.account = messages.RegistrationResource(
                uri=exc.location, body=messages.Registration()
            )
        self._client, self._key, self._net = acme, key, net
        return acme, key

    def order(self, names: tuple[str, ...]) -> bytes:
        """Obtain a certificate for ``names``: the chain then the new private key (PEM)."""
        try:
            return self._order(names)
        except OrderError:
            self._client = None
            raise
        except Exception as exc:  # the library raises many kinds; all mean "this order failed"
            retry_after = self._net.retry_after if self._net is not None else None
            self._client = self._net = None
            raise OrderError(_describe(exc), retry_after) from exc

    def _order(self, names: tuple[str, ...]) -> bytes:
        acme, account_key = self._connect()
        assert self._net is not None
        self._net.retry_after = None
        key = new_key()
        csr = crypto_util.make_csr(key_pem(key), list(names))
        order = acme.new_order(csr)
        published: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue
                challb = self._pick(authz)
                name = authz.body.identifier.value
                published.append(self._publish(name, challb.chall, account_key))
                acme.answer_challenge(challb, challb.chall.response(account_key))
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT)
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for path in published:
                remove(path)
        return order.fullchain_pem.encode() + _pem(key)

    def _pick(self, authz: messages.AuthorizationResource) -> messages.ChallengeBody:
        wanted = self.settings.challenge
        for challb in authz.body.challenges:
            if challb.chall.typ == wanted:
                return challb
        offered = ", ".join(c.chall.typ for c in authz.body.challenges)
        raise OrderError(
            f"the server offers no {wanted} challenge for {authz.body.identifier.value} "
            f"(offers: {offered})"
        )

    def _publish(self, name: str, chall: Any, account_key: JWKEC) -> str:
        key_authorization = str(chall.key_authorization(account_key))
        if isinstance(chall, TLSALPN01):
            path = self.state.alpn_challenge(name)
            write_private(path, challenge_pem(name, key_authorization))
            return path
        token_path = self.state.http_challenge(chall.encode("token"))
        if token_path is None:
            raise OrderError(f"the server sent an unusable HTTP-01 token for {name}")
        write_private(token_path, key_authorization.encode())
        return token_path


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, errors.ValidationError):
        problems = [
            f"{a.body.identifier.value}: {c.error.detail if c.error else c.status}"
            for a in exc.failed_authzrs
            for c in a.body.challenges
            if c.error is not None
        ]
        return "validation failed: " + "; ".join(problems or [str(exc)])
    if isinstance(exc, messages.Error):
        return f"the ACME server refused: {exc.detail or exc.typ}"
    return f"{type(exc).__name__}: {exc}"
