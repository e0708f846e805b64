"""Locust load test for CineSync: known users drawn from a Zipf law over the served bundle's
histories, a share of cold-start users, online events and explain calls; every response is
validated (status, k items, nothing already seen, model version present).

Run it through `python -m loadtests.run` (headless, CSV, SLO verdict) or plain locust:
    CINESYNC_STORE_DIR=model_store/store locust -f loadtests/locustfile.py --host http://127.0.0.1:8000
LOADTEST_RATE_PER_USER (requests/s per simulated user, 0 = as fast as possible) paces users;
LOADTEST_RESULT_FILE, when set, receives the final statistics and errors as JSON at exit
(locust's CSV is written once a second, so it can miss the last second).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import gevent.lock
from locust import FastHttpUser, constant, constant_throughput, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment

from loadtests.checks import ValidationError, check_explain, check_recommendation
from loadtests.workload import Workload, load_workload, store_location

RECOMMEND = "/recommend/[user_id]"
EVENTS = "/users/[user_id]/events"
EXPLAIN = "/explain/[user_id]/[item_id]"

_lock = gevent.lock.Semaphore()
_workload: Workload | None = None
_environment: Environment | None = None


def _remember_environment(environment: Environment, **_: Any) -> None:
    global _environment
    _environment = environment


def _write_result(exit_code: int, **_: Any) -> None:
    path = os.environ.get("LOADTEST_RESULT_FILE")
    if not path or _environment is None or _environment.stats is None:
        return
    stats = _environment.stats
    result = {
        "entries": [entry.serialize() for entry in stats.entries.values() if entry.num_requests],
        "errors": list(stats.serialize_errors().values()),
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)


events.init.add_listener(_remember_environment)
events.quit.add_listener(_write_result)


def _rate_per_user() -> float:
    return float(os.environ.get("LOADTEST_RATE_PER_USER", "0") or 0)


class CineSyncUser(FastHttpUser):
    """One simulated client."""

    wait_time = constant_throughput(_rate_per_user()) if _rate_per_user() > 0 else constant(0)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.last: dict[str, list[str]] = {}
        self.workload = self._shared_workload()

    def _shared_workload(self) -> Workload:
        """Load, once per process, the histories of the version the service actually serves."""
        global _workload
        with _lock:
            if _workload is None:
                probe = self.client.get(f"/recommend/{Workload.cold_user()}", name=RECOMMEND)
                probe.raise_for_status()
                version = int(probe.json()["model_version"])
                store, name = store_location()
                _workload = load_workload(store, name, version)
            return _workload

    @task
    def step(self) -> None:
        action = self.workload.action(self.rng)
        if action == "cold":
            self.recommend(self.workload.cold_user(), cold=True)
        elif action == "recommend":
            self.recommend(self.workload.known_user(self.rng), cold=False)
        else:
            user = self.workload.known_user(self.rng)
            items = self.last.get(user) or self.recommend(user, cold=False)
            if items:
                (self.event if action == "event" else self.explain)(user, items[0])

    def recommend(self, user: str, cold: bool) -> list[str]:
        w = self.workload
        seen = frozenset() if cold else w.seen(user)
        expected = min(w.k, len(w.item_ids)) if cold else w.expected_count(user)
        with self.client.get(
            f"/recommend/{user}?k={w.k}", name=RECOMMEND, catch_response=True
        ) as resp:
            ids = self._validate(
                resp,
                lambda body: check_recommendation(
                    body,
                    user,
                    w.k,
                    seen if str(body.get("model_version")) == str(w.version) else frozenset(),
                    expected,
                    cold,
                ),
            )
        if not isinstance(ids, list):
            return []
        if not cold:
            self.last[user] = ids
        return ids

    def event(self, user: str, item: str) -> None:
        w = self.workload
        w.attempted.setdefault(user, set()).add(item)
        with self.client.post(
            f"/users/{user}/events",
            json={"item_id": item, "type": "view"},
            name=EVENTS,
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return
            resp.success()
        w.confirmed.setdefault(user, set()).add(item)
        self.last.pop(user, None)

    def explain(self, user: str, item: str) -> None:
        with self.client.get(f"/explain/{user}/{item}", name=EXPLAIN, catch_response=True) as resp:
            self._validate(resp, lambda body: check_explain(body, item))

    @staticmethod
    def _validate(resp: ResponseContextManager, check: Any) -> Any:
        if resp.status_code != 200:
            resp.failure(f"status {resp.status_code}: {resp.text[:200] if resp.text else ''}")
            return None
        try:
            result = check(resp.json())
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            resp.failure(f"invalid response: {exc}")
            return None
        resp.success()
        return result
