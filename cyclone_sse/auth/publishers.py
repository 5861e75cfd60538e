"""Who may publish over HTTP: the one ladder of publisher credentials that ``POST
/publish`` and Pushpin's ``POST /publish/`` both climb (the key, a control-key JWT, a
publisher token), and the rights a proof gives."""

from __future__ import annotations

import hmac

import jwt

from cyclone_sse.auth.tokens import Claims, TokenVerifier
from cyclone_sse.errors import Forbidden, Unauthorized

#: What a credential proved: True (a key), a publisher token's claims, or None (nothing
#: presented yet: the 2013 ``key`` field of the body may still prove it).
Proof = Claims | bool | None


def key_matches(secret: str, given: str | None) -> bool:
    """``given`` is the key ``secret``, compared in constant time; False without one."""
    return bool(secret and given and hmac.compare_digest(given.encode(), secret.encode()))


class Publishers:
    """The credentials one publish endpoint takes: its ``keys`` (compared in constant
    time), a JWT signed with ``control_key`` (Pushpin's control tokens; ``iss`` checked
    against ``control_iss`` when set), and publisher tokens the ``verifier`` accepts
    (their ``publish`` claim then limits the channels).  With none of them configured
    the endpoint is open (the 2013 default, refused at start on a public address)."""

    def __init__(self, keys: tuple[str, ...], verifier: TokenVerifier | None,
                 control_key: str = "", control_iss: str = "") -> None:
        self.keys = tuple(key for key in keys if key)
        self.verifier = verifier
        self.control_key = control_key
        self.control_iss = control_iss
        self.open = not self.keys and verifier is None and not control_key

    def proof(self, credential: str | None, key_may_follow: bool = False) -> Proof:
        """What ``credential`` proves, checked before any body is read: a wrong one is
        ``Unauthorized`` at once.  None: nothing was presented, and ``key_may_follow``
        (the body may carry a key)."""
        if self.open:
            return True
        if not credential:
            if key_may_follow and self.keys:
                return None
            raise Unauthorized(("a publish key or a publisher token is needed"
                                if self.keys else "a publisher token is needed")
                               + " (Authorization: Bearer)")
        for key in self.keys:
            if key_matches(key, credential):
                return True
        if credential.count(".") == 2:
            if self.control_key:
                try:
                    jwt.decode(credential, self.control_key, algorithms=["HS256"],
                               issuer=self.control_iss or None,
                               options={"require": ["exp"],
                                        "verify_iss": bool(self.control_iss)})
                    return True
                except jwt.PyJWTError:
                    pass
            if self.verifier is not None:
                return self.verifier.verify(credential)
        raise Unauthorized("missing or wrong publish key")

    def check_rights(self, proof: Proof, key: str | None, channels: list[str]) -> None:
        """After the body is parsed: its ``key`` (when nothing else was presented), or
        the token's ``publish`` claim for each of ``channels``."""
        if proof is True:
            return
        if isinstance(proof, Claims):
            for channel in channels:
                if not proof.publish.covers(channel):
                    raise Forbidden(f"the token may not publish to {channel}", channel)
            return
        if not any(key_matches(secret, key) for secret in self.keys):
            raise Unauthorized("missing or wrong publish key")
