"""Several servers for one model: the replicas of one deployment behind one endpoint.

    endpoints:
      qwen: {kind: openai, base_url: [http://gpu1:8000/v1, http://gpu2:8000/v1, http://gpu3:8000/v1]}

Each replica has its own client and limiter, so a 429 from one slows only that one, and the
endpoint's `concurrency`, `rpm` and `tpm` apply to each. A request goes to the replica with the most
room (free slots less its queue). A replica that stops answering — nothing listens any more, or a
connection drops mid-answer — is taken out: the requests it held are sent to the others at once,
and it is tried again later with one request at a time, after 1 s, then 2, 4 … up to 30 s. With a
single URL there is one replica and nothing here changes how the endpoint behaves.
"""

from __future__ import annotations

import asyncio
import time

from synthtrace.engine.limiter import Limiter
from synthtrace.llm.base import Client
from synthtrace.types import Struct

RETRY_FIRST_S = 1.0
RETRY_CAP_S = 30.0


class Replica(Struct):
    """One server: its URL, client and limiter, and whether it is in service."""

    __slots__ = ("url", "client", "limiter", "failure_rate", "answered", "out_until", "outs", "hopeless")

    def __init__(self, url: str, client: Client, limiter: Limiter):
        self.url = url
        self.client = client
        self.limiter = limiter
        self.failure_rate = 0.0  # moving average over recent answers (1 = failed, 0 = ok)
        self.answered = False  # it has answered at least once in this run
        self.out_until = 0.0  # taken out until then (monotonic); 0: in service
        self.outs = 0  # times taken out since it last answered
        self.hopeless: str | None = None  # why retrying cannot help (a name that does not resolve …)

    def observe(self, failed: bool) -> None:
        self.failure_rate += ((1.0 if failed else 0.0) - self.failure_rate) * 0.02

    def available(self, now: float) -> bool:
        """In service, or due for another try (one request at a time until it answers)."""
        if not self.out_until:
            return True
        return now >= self.out_until and self.limiter.in_flight == 0


class Replicas:
    """The replicas of one endpoint, and which of them takes the next request."""

    def __init__(self, replicas: list[Replica]):
        self.all = replicas
        self.several = len(replicas) > 1
        self._turn = 0  # where the search for the roomiest replica starts: ties are taken in turn
        self.notices: list[str] = []  # what the run should say (a replica taken out, back in service)

    @property
    def in_flight(self) -> int:
        return sum(rep.limiter.in_flight for rep in self.all)

    @property
    def slots(self) -> int:
        return sum(rep.limiter.ceiling for rep in self.all)

    def pick(self) -> Replica | None:
        """The available replica with the most room, or None while every one is out."""
        if not self.several:
            return self.all[0]
        now = time.monotonic()
        n = len(self.all)
        self._turn = (self._turn + 1) % n
        best, best_room = None, 0.0
        for i in range(n):
            rep = self.all[(self._turn + i) % n]
            if rep.available(now):
                room = rep.limiter.room
                if best is None or room > best_room:
                    best, best_room = rep, room
        return best

    def room_besides(self, rep: Replica) -> bool:
        """Another replica in service has a free slot now (so a request `rep` refused need not wait)."""
        if not self.several:
            return False
        now = time.monotonic()
        return any(other is not rep and other.available(now) and other.limiter.room > 0 for other in self.all)

    async def acquire(self, tokens: int, first: bool) -> Replica:
        """A slot on the replica with the most room (waiting for one to come back if all are out)."""
        while True:
            rep = self.pick()
            if rep is None:
                await asyncio.sleep(max(0.01, min(r.out_until for r in self.all) - time.monotonic()))
                continue
            await rep.limiter.acquire(tokens, first)
            if rep.out_until and (self.several and rep.limiter.in_flight > 1 or time.monotonic() < rep.out_until):
                # Taken out while this request queued for it (or another try is already on its way).
                rep.limiter.release()
                first = True
                continue
            return rep

    def answered(self, rep: Replica) -> None:
        rep.answered = True
        rep.hopeless = None
        if rep.out_until:
            rep.out_until = 0.0
            rep.outs = 0
            self.notices.append(f"replica {rep.url} answers again: back in service")

    def take_out(self, rep: Replica, why: str, hopeless: bool = False) -> bool:
        """`rep` stopped answering: out of service until a later try. False when no other replica is
        there to serve meanwhile (then the request that failed backs off as on a single server)."""
        if hopeless:
            rep.hopeless = why
        if not self.several:
            return False
        others = any(not r.out_until for r in self.all if r is not rep)
        if not rep.out_until:
            self.notices.append(f"replica {rep.url} stopped answering ({why}): taken out, "
                                + ("its requests go to the others" if others else "and no other one is in service"))
        rep.outs += 1
        rep.out_until = time.monotonic() + min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** (rep.outs - 1))
        return others

    def hopeless(self) -> str | None:
        """Why the endpoint cannot be reached at all: every replica failed in a way retrying cannot mend."""
        if all(rep.hopeless for rep in self.all):
            return self.all[0].hopeless
        return None
