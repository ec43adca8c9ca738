"""Who may call what: bearer tokens and JWTs, and two roles.

A SONIC server is shared by many grid jobs and reachable over the network, so
a site can require credentials on every call (``Authorization: Bearer <t>``
as HTTP header or gRPC metadata, the way CMSSW's client and ``tritonclient``
send them).  A token is accepted when it is

- one of the static tokens of ``--auth-token-file`` (lines ``<role> <token>``),
  compared by SHA-256 digest so that lookup time says nothing about the token;
- a JWT signed with the shared secret of ``--auth-jwt-secret-file`` (HS*), or
  with a key of the JWKS of ``--auth-jwks-file`` (RS*, PS*, ES*, EdDSA), with
  an ``exp`` claim, and ``aud``/``iss`` when the server is told to check them.
  Its roles are in ``--auth-roles-claim`` (a list or a space-separated string).

There are two roles.  ``inference`` may infer and read (metadata, config,
statistics, the repository index, which clients use to find a model);
``admin`` may also change the server (model load/unload, shared-memory
registration, log settings).  Health answers without credentials unless
``--auth-open-health=false``: probes and load balancers carry no tokens.
Missing or bad credentials are UNAUTHENTICATED (HTTP 401), a role that is not
enough is PERMISSION_DENIED (HTTP 403).  The metrics port is not covered: it
is for the site's Prometheus and is kept off the public network.

Verified JWTs are cached until they expire (a few thousand at most), so a
job's token costs one signature check, not one per request.

Admin calls and refused ones (401 and 403) go to the ``sonic.audit`` log with
who made them: a JWT's ``sub`` (and ``iss``), or ``token:<first 8 hex of its
SHA-256>`` for a static token, never the token itself, and the peer address.
The audit log has its own level, so neither ``--log-info=false`` nor a remote
``log_info=false`` silences it; control characters in what a caller chose
(a JWT's ``sub``, a path) are escaped, so a caller cannot forge or hide lines;
and 401s are rate-limited (:data:`REFUSALS_PER_S` lines a second, then one line
with the count left out), so guessing tokens cannot flood the log.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sonic.errors import SHOWN_CHARS, PermissionDenied, Unauthenticated, shown
from sonic.server.principal import PRINCIPAL
from sonic.server.settings import AuthSettings

audit = logging.getLogger("sonic.audit")
# Its own level: the info log's switches (--log-info, the logging extension) set the level of
# the "sonic" logger, which an explicit level here overrides.
audit.setLevel(logging.INFO)
#: Refused (401) calls logged per second; the rest are counted and reported in one line.
REFUSALS_PER_S = 20

HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
KEY_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                  "ES256", "ES384", "ES512", "EdDSA"]  # fmt: skip
#: The JWK key type ("kty") each family of algorithms signs with.
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
CACHE_SIZE = 4096


class Role(enum.IntEnum):
    """Ordered: a role may do everything the roles below it may."""

    NONE = 0
    INFERENCE = 1
    ADMIN = 2


class Category(enum.Enum):
    """Triton's protocol categories (its ``--*-restricted-api`` names) and the role each needs."""

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    MODEL_CONFIG = "model-config"
    STATISTICS = "statistics"
    REPOSITORY_INDEX = "model-repository-index"
    MODEL_REPOSITORY = "model-repository"
    SHARED_MEMORY = "shared-memory"
    LOGGING = "logging"


NEEDS: dict[Category, Role] = {
    Category.HEALTH: Role.INFERENCE,
    Category.METADATA: Role.INFERENCE,
    Category.INFERENCE: Role.INFERENCE,
    Category.MODEL_CONFIG: Role.INFERENCE,
    Category.STATISTICS: Role.INFERENCE,
    Category.REPOSITORY_INDEX: Role.INFERENCE,
    Category.MODEL_REPOSITORY: Role.ADMIN,
    Category.SHARED_MEMORY: Role.ADMIN,
    Category.LOGGING: Role.ADMIN,
}


@dataclass(frozen=True, slots=True)
class Caller:
    role: Role
    #: Who, for the audit log: a JWT's sub (@iss), or a static token's digest prefix.
    subject: str


def printable(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` (as errors show names), with control and line-breaking
    characters escaped: safe to put in a log line whatever a caller sent."""
    return "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100
                                              else f"\\u{ord(c):04x}")
                   for c in shown(text, limit))  # fmt: skip


class _RefusalLog:
    """Audit lines for refused credentials, at most REFUSALS_PER_S a second."""

    def __init__(self) -> None:
        self.second = 0
        self.count = 0
        self.dropped = 0

    def __call__(self, what: str, peer: str, reason: str) -> None:
        now = int(time.monotonic())
        if now != self.second:
            if self.dropped:
                audit.warning("%d more refused calls in the last second(s) not logged",
                              self.dropped)  # fmt: skip
            self.second, self.count, self.dropped = now, 0, 0
        self.count += 1
        if self.count > REFUSALS_PER_S:
            self.dropped += 1
            return
        audit.warning("refused %s from %s: %s", printable(what), printable(peer or "?"),
                      printable(reason))  # fmt: skip


def _role(name: str) -> Role:
    try:
        return Role[name.strip().upper()]
    except KeyError:
        raise ValueError(f"unknown role {name!r}: use 'inference' or 'admin'") from None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _read_tokens(path: str) -> dict[bytes, Caller]:
    tokens: dict[bytes, Caller] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # The messages never quote the line: a malformed one may well be a bare token.
        words = line.split(None, 1)
        if len(words) != 2:
            raise ValueError(f"{path}:{n}: expected '<role> <token>' (role 'inference' or "
                             "'admin'), found one word")  # fmt: skip
        try:
            role = _role(words[0])
        except ValueError:
            raise ValueError(f"{path}:{n}: the first word must be the role, 'inference' or "
                             "'admin', then the token") from None  # fmt: skip
        digest = _digest(words[1].strip())
        tokens[digest] = Caller(role, f"token:{digest.hex()[:8]}")
    if not tokens:
        raise ValueError(f"{path}: no tokens")
    return tokens


class Authenticator:
    """Checks the credentials of one call against the role its category needs."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.enabled
        self._tokens = _read_tokens(settings.token_file) if settings.token_file else {}
        self._secret = (Path(settings.jwt_secret_file).read_bytes().strip()
                        if settings.jwt_secret_file else b"")  # fmt: skip
        self._jwks: Any = None
        if settings.jwks_file:
            import jwt

            try:
                self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            except (jwt.PyJWTError, ValueError) as err:
                raise ValueError(f"{settings.jwks_file}: not a usable JWKS: {err}") from None
        self._cache: dict[str, tuple[Caller, float]] = {}
        #: Audit a refused (401) call: ``refused(what, peer, reason)``, rate-limited.
        self.refused = _RefusalLog()

    # -- checks ------------------------------------------------------------------
    def check(
        self, category: Category, authorization: str | None, what: str = "", peer: str = ""
    ) -> None:
        """Return if the call may go on; raise UNAUTHENTICATED or PERMISSION_DENIED.

        ``what`` (the RPC or route) and ``peer`` go into the audit log with the caller, who
        also becomes the call's principal (:mod:`sonic.server.principal`).
        """
        if not self.enabled or (category is Category.HEALTH and self.settings.open_health):
            return
        try:
            caller = self.caller(authorization)
        except Unauthenticated as err:
            self.refused(what or category.value, peer, err.message)
            raise
        PRINCIPAL.set(caller.subject)
        need = NEEDS[category]
        who = printable(caller.subject)
        if caller.role < need:
            audit.warning("denied %s to %s from %s (%s role)", printable(what or category.value),
                          who, printable(peer or "?"), caller.role.name.lower())  # fmt: skip
            raise PermissionDenied(
                f"the '{category.value}' calls need the '{need.name.lower()}' role; this "
                f"token has '{caller.role.name.lower()}'"
            )
        if need is Role.ADMIN:
            audit.info("%s by %s from %s", printable(what or category.value), who,
                       printable(peer or "?"))  # fmt: skip

    def role(self, authorization: str | None) -> Role:
        return self.caller(authorization).role

    def caller(self, authorization: str | None) -> Caller:
        if not authorization:
            raise Unauthenticated(
                "this server requires credentials: send 'authorization: Bearer <token>'"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization header must be 'Bearer <token>'")
        known = self._tokens.get(_digest(token))
        if known is not None:
            return known
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        if not (self._secret or self._jwks is not None):
            raise Unauthenticated("unknown bearer token")
        return self._verify_jwt(token)

    # -- JWT ---------------------------------------------------------------------------
    def _verify_jwt(self, token: str) -> Caller:
        import jwt

        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg", "")
            if alg in HMAC_ALGORITHMS and self._secret:
                key: Any = self._secret
            elif alg in KEY_ALGORITHMS and self._jwks is not None:
                key = self._jwk(header.get("kid"), alg)
            else:
                raise Unauthenticated(f"JWT algorithm '{alg}' is not accepted by this server")
            claims = jwt.decode(
                token, key, algorithms=[alg],
                audience=s.jwt_audience or None, issuer=s.jwt_issuer or None,
                options={"require": ["exp"], "verify_aud": bool(s.jwt_audience)},
            )  # fmt: skip
        except jwt.PyJWTError as err:
            raise Unauthenticated(f"invalid token: {err}") from None
        subject = str(claims.get("sub", "?"))
        if claims.get("iss"):
            subject += f"@{claims['iss']}"
        caller = Caller(self._claimed_role(claims), subject)
        if len(self._cache) >= CACHE_SIZE:
            now = time.time()
            self._cache = {t: v for t, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
        self._cache[token] = (caller, float(claims["exp"]))
        return caller

    def _jwk(self, kid: Any, alg: str) -> Any:
        """The JWKS key for ``kid``, which must be of the type ``alg`` signs with."""
        keys = self._jwks.keys
        if kid is None:
            if len(keys) != 1:
                raise Unauthenticated("the JWT has no 'kid' and the server's JWKS has several keys")
            jwk = keys[0]
        else:
            jwk = next((k for k in keys if k.key_id == kid), None)
            if jwk is None:
                raise Unauthenticated(f"no key {printable(str(kid), 64)!r} in the server's JWKS")
        want = KEY_TYPES[alg[:2]]
        if jwk.key_type != want:
            raise Unauthenticated(f"the JWT's algorithm {alg} needs a key of type {want}; key "
                                  f"{printable(str(kid), 64)!r} is {jwk.key_type}")  # fmt: skip
        return jwk.key

    def _claimed_role(self, claims: dict[str, Any]) -> Role:
        raw = claims.get(self.settings.roles_claim, [])
        names = raw.split() if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        best = Role.NONE
        for name in names:
            try:
                best = max(best, _role(str(name)))
            except ValueError:
                continue  # roles meant for other services
        return best


def describe(settings: AuthSettings) -> str:
    """One log line: which credentials the server accepts."""
    parts = [name for name, on in (("static tokens", settings.token_file),
                                   ("HS* JWTs", settings.jwt_secret_file),
                                   ("JWKS JWTs", settings.jwks_file)) if on]  # fmt: skip
    return "authentication: " + (", ".join(parts) if parts else "off") + (
        "; health is open" if settings.open_health and parts else "")

