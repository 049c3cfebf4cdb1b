"""Helpers shared by the matrix-nio scenario scripts in this folder.

A scenario is an async function that takes a `Checks` and drives one or more nio clients
against a homeserver; `main(scenario)` parses the command line (the homeserver URL, and for
scenarios across servers the other homeservers' URLs and the CA their certificates come from),
runs it,
prints every check that passed and exits non-zero with a clear message at the first one that
did not. To cover a new area (rooms, messages, sync), write a new scenario script, or add steps
to an existing one, with these helpers; tests/nio_client.rs runs each script against a freshly
started appliance.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import ssl
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
import nio
from nio.store import SqliteMemoryStore

T = TypeVar("T")


class CheckFailed(Exception):
    """A check did not hold; the message says which and what was seen instead."""


def describe(response: Any) -> str:
    """A one-line account of a nio response, for failure messages."""
    if isinstance(response, nio.ErrorResponse):
        transport = getattr(response, "transport_response", None)
        status = getattr(transport, "status", "?")
        return (
            f"{type(response).__name__} (HTTP {status}, errcode {response.status_code}, "
            f"error {response.message!r})"
        )
    return repr(response)


def expect(response: Any, cls: type[T], what: str) -> T:
    """Returns `response` if it is a `cls`; fails naming `what` otherwise."""
    if not isinstance(response, cls):
        raise CheckFailed(f"{what}: expected {cls.__name__}, got {describe(response)}")
    return response


def expect_error(response: Any, errcode: str, http_status: int, what: str) -> nio.ErrorResponse:
    """Returns `response` if it is a Matrix error with this errcode and HTTP status."""
    if not isinstance(response, nio.ErrorResponse):
        raise CheckFailed(f"{what}: expected error {errcode}, got success {describe(response)}")
    transport = getattr(response, "transport_response", None)
    status = getattr(transport, "status", None)
    if response.status_code != errcode or status != http_status:
        raise CheckFailed(
            f"{what}: expected HTTP {http_status} {errcode}, got {describe(response)}"
        )
    return response


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    if actual != expected:
        raise CheckFailed(f"{what}: expected {expected!r}, got {actual!r}")


def ensure(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


@dataclass
class Account:
    """A registered user with the client that registered it (logged in as its first device)."""

    localpart: str
    password: str
    user_id: str
    device_id: str
    client: nio.AsyncClient


class Checks:
    """The context a scenario runs in: the homeserver, its clients, and the passed checks."""

    def __init__(
        self,
        homeserver: str,
        others: list[str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.homeserver = homeserver.rstrip("/")
        # Further homeservers, for scenarios across servers (federation).
        self.others = [other.rstrip("/") for other in others or []]
        # Trusts the test CA of HTTPS homeservers; None: the system's roots.
        self.ssl_context = ssl_context
        self.passed: list[str] = []
        self._clients: list[nio.AsyncClient] = []

    def ok(self, what: str) -> None:
        """Records (and prints) a check that held."""
        self.passed.append(what)
        print(f"ok: {what}", flush=True)

    def client(
        self, user: str = "", encryption: bool = False, homeserver: str | None = None
    ) -> nio.AsyncClient:
        """A new nio client (of `homeserver`, by default the first one) with bounded retries, so
        a broken server fails the run quickly instead of being retried forever. Closed when the
        scenario ends. With `encryption`, its Olm account and sessions live in memory (nio's
        SqliteMemoryStore)."""
        extra: dict[str, Any] = {"store": SqliteMemoryStore} if encryption else {}
        config = nio.AsyncClientConfig(
            max_limit_exceeded=0,
            max_timeouts=2,
            request_timeout=30,
            encryption_enabled=encryption,
            **extra,
        )
        client = nio.AsyncClient(
            homeserver or self.homeserver, user=user, config=config, ssl=self.ssl_context
        )
        self._clients.append(client)
        return client

    @staticmethod
    def unique_localpart(prefix: str) -> str:
        """A fresh user name, so a scenario can run many times against the same server."""
        return f"{prefix}-{secrets.token_hex(4)}"

    async def register(
        self, prefix: str, password: str | None = None, homeserver: str | None = None
    ) -> Account:
        """Registers a new user (on `homeserver`, by default the first one) with nio's `register`
        (the m.login.dummy flow) and checks the answer; the returned account's client is logged
        in."""
        localpart = self.unique_localpart(prefix)
        password = password or f"pw-{secrets.token_hex(8)}"
        client = self.client(homeserver=homeserver)
        response = expect(
            await client.register(localpart, password, device_name=f"nio {prefix}"),
            nio.RegisterResponse,
            f"register {localpart}",
        )
        ensure(
            response.user_id.startswith(f"@{localpart}:"),
            f"register {localpart}: unexpected user_id {response.user_id!r}",
        )
        ensure(bool(response.access_token), f"register {localpart}: no access_token")
        ensure(bool(response.device_id), f"register {localpart}: no device_id")
        ensure(client.logged_in, f"register {localpart}: nio is not logged in afterwards")
        expect_equal(client.user_id, response.user_id, f"register {localpart}: client user_id")
        return Account(localpart, password, response.user_id, response.device_id, client)

    async def login(
        self,
        account: Account,
        device_name: str = "nio login",
        encryption: bool = False,
        homeserver: str | None = None,
    ) -> nio.AsyncClient:
        """Logs `account` in with its password on a new client (of `homeserver`, by default the
        first one: the account's own server); returns that client."""
        client = self.client(user=account.user_id, encryption=encryption, homeserver=homeserver)
        response = expect(
            await client.login(account.password, device_name=device_name),
            nio.LoginResponse,
            f"log in as {account.user_id}",
        )
        expect_equal(response.user_id, account.user_id, "login: user_id")
        ensure(bool(response.access_token), "login: no access_token")
        ensure(bool(response.device_id), "login: no device_id")
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


def main(scenario: Callable[[Checks], Awaitable[None]], description: str) -> None:
    """Runs `scenario` against the homeserver named on the command line and exits: 0 when every
    check held, 1 at the first failure (with its message on stderr)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("homeserver", help="base URL of the homeserver, e.g. http://127.0.0.1:8008")
    parser.add_argument("others", nargs="*", help="other homeservers, for scenarios across servers")
    parser.add_argument("--ca-file", help="the CA (PEM) that issued the homeservers' certificates")
    args = parser.parse_args()
    ssl_context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    # nio logs what it finds odd (e.g. an error body where it wanted a success); keep that, marked.
    logging.basicConfig(level=logging.WARNING, format="  (%(name)s %(levelname)s: %(message)s)")

    async def run() -> None:
        checks = Checks(args.homeserver, args.others, ssl_context)
        try:
            await scenario(checks)
        finally:
            await checks.close()
        print(f"{len(checks.passed)} checks passed against {checks.homeserver}", flush=True)

    try:
        asyncio.run(run())
    except CheckFailed as failure:
        print(f"FAIL: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
    except aiohttp.ClientError as error:
        print(f"FAIL: cannot talk to {args.homeserver}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:  # a crash in nio or here: show where
        traceback.print_exc()
        print("FAIL: the scenario crashed (traceback above)", file=sys.stderr, flush=True)
        sys.exit(1)
