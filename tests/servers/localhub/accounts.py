"""Users, organisations and tokens, and the Hub's access rules built on them.

The rules mirror the Hub's: a private repo is invisible to anyone outside its namespace (the
answer is "not found", never "forbidden"), a gated repo shows its metadata to everyone but serves
files only to its namespace and to users granted access, and only a namespace's owner or an
organisation's members may write, with a ``write`` token.

The token values are fixed so a server started by hand and a test suite agree on them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from .storage import Repo

ALICE_TOKEN = "hf_localhub_alice_0000000000000000000001"
ALICE_READ_TOKEN = "hf_localhub_alice_read_00000000000000002"
BOB_TOKEN = "hf_localhub_bob_000000000000000000000003"
CAROL_TOKEN = "hf_localhub_carol_00000000000000000000004"
ADMIN_TOKEN = "hf_localhub_admin_00000000000000000000005"

# user -> write token, the handy form for tests
TOKENS: dict[str, str] = {"alice": ALICE_TOKEN, "bob": BOB_TOKEN, "carol": CAROL_TOKEN}


@dataclass(frozen=True)
class Account:
    name: str
    fullname: str
    type: Literal["user", "org"] = "user"
    members: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        return hashlib.sha1(f"{self.type}:{self.name}".encode()).hexdigest()[:24]

    def avatar_url(self, base_url: str) -> str:
        return f"{base_url}/avatars/{self.name}.svg"


@dataclass(frozen=True)
class Token:
    value: str
    user: str
    role: Literal["read", "write"]
    name: str


class Accounts:
    """Who exists, which token is whose, and what each may see or change."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        for user, fullname in [
            ("alice", "Alice Adapter"),
            ("bob", "Bob Gatekeeper"),
            ("carol", "Carol Outsider"),
        ]:
            self.add(Account(user, fullname))
        self.add(Account("gradience-examples", "Gradience examples", "org", frozenset({"alice"})))
        self.add(Account("gradience-test", "Gradience test fixtures", "org", frozenset({"alice"})))
        for token in [
            Token(ALICE_TOKEN, "alice", "write", "alice-write"),
            Token(ALICE_READ_TOKEN, "alice", "read", "alice-read"),
            Token(BOB_TOKEN, "bob", "write", "bob-write"),
            Token(CAROL_TOKEN, "carol", "write", "carol-write"),
        ]:
            self.tokens[token.value] = token

    def add(self, account: Account) -> None:
        self.accounts.setdefault(account.name, account)

    def ensure_user(self, name: str) -> None:
        """Namespaces of seeded third-party repos exist as users that nobody can log in as."""
        self.add(Account(name, name))

    def token(self, value: str) -> Token | None:
        return self.tokens.get(value)

    def orgs_of(self, user: str) -> list[Account]:
        return [a for a in self.accounts.values() if a.type == "org" and user in a.members]

    def owns_namespace(self, user: str | None, namespace: str) -> bool:
        if user is None:
            return False
        if user == namespace:
            return True
        account = self.accounts.get(namespace)
        return account is not None and account.type == "org" and user in account.members

    # The three questions every route asks.
    def can_see(self, repo: Repo, user: str | None) -> bool:
        return not repo.private or self.owns_namespace(user, repo.namespace)

    def can_download(self, repo: Repo, user: str | None) -> bool:
        if not self.can_see(repo, user):
            return False
        if not repo.gated:
            return True
        return self.owns_namespace(user, repo.namespace) or (user is not None and user in repo.gated_access)

    def can_write(self, repo: Repo, token: Token | None) -> bool:
        return token is not None and token.role == "write" and self.owns_namespace(token.user, repo.namespace)
