"""The A/B router in-process (httpx's ASGITransport) in front of fake model servers: small asyncio HTTP
servers on loopback whose answers, delays and failures each test sets. Routing, headers, fallbacks, the
recorded rows, feedback validation, state changes, metrics; and the pooled upstream client itself."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from loopline.rollout.assign import assign, user_hash
from loopline.rollout.events import ExperimentState, Feedback, RoutedRequest
from loopline.rollout.feedback import FeedbackInvalid, parse_feedback
from loopline.rollout.router import Router, RouterSettings, create_router
from loopline.rollout.upstream import UpstreamError, UpstreamPool

pytestmark = pytest.mark.unit


@dataclass
class FakeModelServer:
    """A model server on a loopback port: answers /v1/predict like loopline's, or as told."""

    version: str
    label: str = "cat"
    status: int = 200
    delay: float = 0.0
    reset: bool = False  # drop the connection instead of answering
    chunked: bool = False
    interim: bool = False  # send "100 Continue" first
    close: bool = False  # answer with "connection: close", then close
    seen: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> FakeModelServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ")
                headers = dict(line.lower().split(": ", 1) for line in head[1:] if line)
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append({"method": method, "target": target, "headers": headers, "body": body})
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.reset:
                    writer.transport.abort()
                    return
                writer.write(self._answer())
                await writer.drain()
                if self.close:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _answer(self) -> bytes:
        predictions = [
            {"image": "body", "label": self.label, "top_k": [{"label": self.label, "probability": 0.75}]}
        ]
        body = json.dumps(
            {"model_name": "m", "model_version": self.version, "predictions": predictions}
        ).encode()
        if self.status >= 400:
            body = json.dumps({"error": f"fake failure {self.status}"}).encode()
        head = (
            f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
            f"x-model-version: m/{self.version}\r\nserver: fake\r\ndate: today\r\n"
        )
        if self.close:
            head += "connection: close\r\n"
        if self.interim:
            head = "HTTP/1.1 100 Continue\r\n\r\n" + head
        if self.chunked:
            middle = len(body) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:middle], body[middle:]))
            return f"{head}transfer-encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"
        return f"{head}content-length: {len(body)}\r\n\r\n".encode() + body


class MemorySink:
    def __init__(self, fail: bool = False) -> None:
        self.requests: list[RoutedRequest] = []
        self.feedback: list[Feedback] = []
        self.fail = fail

    def record_request(self, row: RoutedRequest) -> None:
        if self.fail:
            raise RuntimeError("the store is down")
        self.requests.append(row)

    def record_feedback(self, row: Feedback) -> None:
        self.feedback.append(row)


@dataclass
class Harness:
    router: Router
    client: httpx.AsyncClient
    champion: FakeModelServer
    challenger: FakeModelServer
    sink: MemorySink
    states: list[ExperimentState]  # the provider answers the last one

    def set_state(self, **changes: Any) -> None:
        self.states.append(replace(self.states[-1], **changes))

    async def predict(self, user: str | None = None, **headers: str) -> httpx.Response:
        if user is not None:
            headers["X-User-Id"] = user
        return await self.client.post("/v1/predict?k=2", content=b"\x89PNG fake", headers=headers)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for family in text_string_to_metric_families(self.router.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def run(
    test: Callable[[Harness], Awaitable[None]],
    weight: float = 0.5,
    status: str = "running",
    known: Callable[[str], bool] | None = None,
    sink: MemorySink | None = None,
    sampler: Any = None,
    **settings: Any,
) -> None:
    async def body() -> None:
        champion, challenger = (
            await FakeModelServer("1").start(),
            await FakeModelServer("2", label="dog").start(),
        )
        state = ExperimentState(
            name="exp",
            model="m",
            champion_version="1",
            challenger_version="2",
            champion_url=champion.url,
            challenger_url=challenger.url,
            seed="seed-1",
            weight=weight,
            step=0,
            status=status,  # type: ignore[arg-type]
        )
        states = [state]
        memory = sink or MemorySink()
        router = create_router(RouterSettings(**settings), lambda: states[-1], memory, known, sampler=sampler)
        transport = httpx.ASGITransport(app=router)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            try:
                await test(Harness(router, client, champion, challenger, memory, states))
            finally:
                await router.aclose()
                await champion.stop()
                await challenger.stop()

    asyncio.run(asyncio.wait_for(body(), timeout=30))


def users_in(arm: str, weight: float, count: int, seed: str = "seed-1") -> list[str]:
    found = [f"user-{i}" for i in range(10 * count) if assign(seed, f"user-{i}", weight) == arm]
    return found[:count]


# --- routing -----------------------------------------------------------------------------------------------


def test_routes_each_user_to_their_variant_every_time_with_the_headers() -> None:
    async def test(h: Harness) -> None:
        for user in users_in("challenger", 0.5, 3) + users_in("champion", 0.5, 3):
            arm = assign("seed-1", user, 0.5)
            for _ in range(3):
                answer = await h.predict(user)
                assert answer.status_code == 200
                assert answer.headers["X-Variant"] == arm
                assert answer.headers["X-Model-Version"] == ("m/2" if arm == "challenger" else "m/1")
                assert len(answer.headers["X-Request-Id"]) == 32
                assert answer.json()["predictions"][0]["label"] == ("dog" if arm == "challenger" else "cat")
                assert "x-fallback" not in answer.headers
        seen = h.champion.seen[0]
        assert seen["target"] == "/v1/predict?k=2" and seen["body"] == b"\x89PNG fake"
        assert seen["headers"]["x-user-id"].startswith("user-") and "x-request-id" in seen["headers"]
        assert len(h.champion.seen) == len(h.challenger.seen) == 9
        assert h.champion.connections == h.challenger.connections == 1  # one kept-alive connection each

    run(test)


def test_records_each_routed_request_with_its_prediction_and_a_hashed_user() -> None:
    async def test(h: Harness) -> None:
        user = users_in("challenger", 0.5, 1)[0]
        answer = await h.predict(user, **{"X-Request-Id": "req-42"})
        assert answer.headers["X-Request-Id"] == "req-42"
        assert h.challenger.seen[0]["headers"]["x-request-id"] == "req-42"
        (row,) = h.sink.requests
        assert (row.request_id, row.experiment, row.variant, row.model_version) == (
            "req-42",
            "exp",
            "challenger",
            "2",
        )
        assert (row.status, row.predicted_label, row.confidence, row.fallback) == (200, "dog", 0.75, False)
        assert row.user_hash == user_hash("seed-1", user) and user not in row.user_hash
        assert 0 < row.latency_ms < 5000

    run(test)


def test_without_a_user_header_the_request_id_is_the_key() -> None:
    async def test(h: Harness) -> None:
        ids = [f"anonymous-{i}" for i in range(40)]
        for request_id in ids:
            answer = await h.predict(**{"X-Request-Id": request_id})
            assert answer.headers["X-Variant"] == assign("seed-1", request_id, 0.5)
        assert {row.user_hash for row in h.sink.requests} == {user_hash("seed-1", i) for i in ids}

    run(test)


def test_the_user_header_is_configurable() -> None:
    async def test(h: Harness) -> None:
        user = users_in("challenger", 0.5, 1)[0]
        answer = await h.client.post("/v1/predict", content=b"x", headers={"X-Session": user})
        assert answer.headers["X-Variant"] == "challenger"

    run(test, user_header="X-Session")


@pytest.mark.parametrize(
    ("weight", "status", "expected"),
    [
        (0.0, "running", {"champion"}),
        (0.7, "rolled_back", {"champion"}),
        (0.7, "halted", {"champion"}),
        (0.7, "promoted", {"challenger"}),
        (1.0, "awaiting_approval", {"challenger"}),
        (0.5, "running", {"champion", "challenger"}),
    ],
)
def test_the_status_and_weight_decide_the_share(weight: float, status: str, expected: set[str]) -> None:
    async def test(h: Harness) -> None:
        arms = {(await h.predict(f"user-{i}")).headers["X-Variant"] for i in range(30)}
        assert arms == expected

    run(test, weight=weight, status=status)


def test_v2_infer_passes_through_and_a_named_version_pins_its_variant() -> None:
    async def test(h: Harness) -> None:
        user = users_in("champion", 0.5, 1)[0]
        body = {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
        answer = await h.client.post("/v2/models/m/infer", json=body, headers={"X-User-Id": user})
        assert answer.status_code == 200 and answer.headers["X-Variant"] == "champion"
        assert h.champion.seen[-1]["target"] == "/v2/models/m/infer"
        pinned = await h.client.post("/v2/models/m/versions/2/infer", json=body, headers={"X-User-Id": user})
        assert pinned.headers["X-Variant"] == "challenger" and pinned.headers["X-Model-Version"] == "m/2"
        assert h.challenger.seen[-1]["target"] == "/v2/models/m/versions/2/infer"
        assert len(h.sink.requests) == 1  # the pinned request is outside the experiment
        unknown = await h.client.post("/v2/models/m/versions/9/infer", json=body)
        assert unknown.status_code == 404 and "neither variant" in unknown.json()["error"]

    run(test)


def test_unknown_routes_methods_and_oversized_bodies_are_refused_with_a_message() -> None:
    async def test(h: Harness) -> None:
        missing = await h.client.get("/v1/nothing")
        assert missing.status_code == 404 and "POST /v1/predict" in missing.json()["error"]
        wrong = await h.client.get("/v1/predict")
        assert wrong.status_code == 405
        large = await h.client.post("/v1/predict", content=b"x" * 101)
        assert large.status_code == 413 and "100 bytes" in large.json()["error"]
        assert h.champion.seen == h.challenger.seen == []

    run(test, max_body_bytes=100)


# --- failures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        ({"status": 500}, "error"),
        ({"delay": 0.5}, "timeout"),
        ({"reset": True}, "unreachable"),
        ("stopped", "unreachable"),
    ],
)
def test_a_failing_challenger_is_answered_by_the_champion_and_counted(failure: Any, reason: str) -> None:
    async def test(h: Harness) -> None:
        if failure == "stopped":
            await h.challenger.stop()
            h.set_state(challenger_url="http://127.0.0.1:9")  # nothing listens on the discard port
        else:
            for key, value in failure.items():
                setattr(h.challenger, key, value)
        user = users_in("challenger", 0.5, 1)[0]
        answer = await h.predict(user)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == "cat"
        assert answer.headers["X-Variant"] == "champion" and answer.headers["X-Fallback"] == reason
        assert answer.headers["X-Model-Version"] == "m/1"
        (row,) = h.sink.requests
        assert (row.variant, row.model_version, row.fallback, row.status) == ("challenger", "1", True, 200)
        assert h.metric("loopline_router_fallbacks_total", reason=reason) == 1
        assert h.metric("loopline_router_requests_total", variant="challenger", status="200") == 1

    run(test, challenger_timeout_s=0.1, refresh_seconds=0.001)


@pytest.mark.parametrize(
    ("failure", "status", "message"),
    [
        ({"status": 503}, 503, "fake failure 503"),
        ({"delay": 0.5}, 504, "did not answer in time"),
        ({"reset": True}, 502, "is unreachable"),
    ],
)
def test_champion_failures_are_returned_naming_the_upstream(
    failure: dict[str, Any], status: int, message: str
) -> None:
    async def test(h: Harness) -> None:
        for key, value in failure.items():
            setattr(h.champion, key, value)
        answer = await h.predict(users_in("champion", 0.5, 1)[0])
        assert answer.status_code == status and message in answer.json()["error"]
        if status != 503:
            assert answer.json()["upstream"] == h.champion.url and h.champion.url in answer.json()["error"]
        assert answer.headers["X-Variant"] == "champion" and "x-fallback" not in answer.headers
        (row,) = h.sink.requests
        assert (row.status, row.fallback, row.predicted_label) == (status, False, None)

    run(test, champion_timeout_s=0.1)


def test_a_failing_sink_never_fails_the_request() -> None:
    async def test(h: Harness) -> None:
        assert (await h.predict("u")).status_code == 200
        assert h.metric("loopline_router_events_dropped_total") == 1

    run(test, sink=MemorySink(fail=True))


# --- the experiment state ----------------------------------------------------------------------------------


def test_weight_changes_are_picked_up_and_move_users_only_to_the_challenger() -> None:
    async def test(h: Harness) -> None:
        users = [f"user-{i}" for i in range(60)]
        before = {u: (await h.predict(u)).headers["X-Variant"] for u in users}
        h.set_state(weight=0.8, step=1)
        await asyncio.sleep(0.06)
        await h.predict("trigger")  # the stale state is re-read in the background
        await asyncio.sleep(0.05)
        after = {u: (await h.predict(u)).headers["X-Variant"] for u in users}
        assert [u for u in users if before[u] == "challenger" and after[u] == "champion"] == []
        assert sum(a == "challenger" for a in after.values()) > sum(
            b == "challenger" for b in before.values()
        )
        assert h.metric("loopline_router_challenger_weight") == 0.8

    run(test, weight=0.2, refresh_seconds=0.05)


def test_no_state_yet_answers_503_and_a_failing_provider_keeps_the_last_state() -> None:
    async def test() -> None:
        answers: list[Any] = [None]
        state = ExperimentState(
            "exp", "m", "1", "2", "http://127.0.0.1:9", "http://127.0.0.1:9", "s", 0.0, 0, "running"
        )

        def provider() -> ExperimentState | None:
            if isinstance(answers[-1], Exception):
                raise answers[-1]
            return answers[-1]

        router = create_router(RouterSettings(refresh_seconds=0.01), provider, MemorySink())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=router), base_url="http://r"
        ) as client:
            first = await client.post("/v1/predict", content=b"x")
            assert first.status_code == 503 and "No experiment state" in first.json()["error"]
            assert (await client.get("/healthz")).status_code == 503
            answers.append(state)
            await asyncio.sleep(1.0)  # reads are retried at most once a second while there is none
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["experiment"] == "exp"
            answers.append(RuntimeError("database is down"))
            await asyncio.sleep(0.02)
            await client.get("/healthz")
            await asyncio.sleep(0.05)
            assert (await client.get("/healthz")).json()["experiment"] == "exp"
            assert router.metrics.state_failures._value.get() >= 1
        await router.aclose()

    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_metrics_show_requests_latency_and_the_weight() -> None:
    async def test(h: Harness) -> None:
        for i in range(10):
            await h.predict(f"user-{i}")
        text = (await h.client.get("/metrics")).text
        assert "loopline_router_request_seconds_bucket" in text
        total = h.metric("loopline_router_requests_total", status="200")
        assert total == 10 == h.metric("loopline_router_request_seconds_count")
        assert h.metric("loopline_router_challenger_share") == 0.5

    run(test)


# --- feedback ----------------------------------------------------------------------------------------------


def test_feedback_for_known_requests_is_accepted_and_recorded() -> None:
    async def test(h: Harness) -> None:
        one = await h.client.post("/v1/feedback", json={"request_id": "r1", "true_label": "cat"})
        assert one.status_code == 202 and one.json() == {"accepted": 1}
        many = [{"request_id": "r2", "correct": False}, {"request_id": "r3", "correct": True}]
        assert (await h.client.post("/v1/feedback", json=many)).json() == {"accepted": 2}
        rows = [(f.request_id, f.true_label, f.correct) for f in h.sink.feedback]
        assert rows == [("r1", "cat", None), ("r2", None, False), ("r3", None, True)]

    run(test, known=lambda request_id: request_id.startswith("r"))


def test_feedback_with_an_unknown_request_id_stores_nothing() -> None:
    async def test(h: Harness) -> None:
        body = [{"request_id": "r1", "correct": True}, {"request_id": "x9", "correct": True}]
        answer = await h.client.post("/v1/feedback", json=body)
        assert answer.status_code == 404 and answer.json()["unknown"] == ["x9"]
        assert "nothing was stored" in answer.json()["error"]
        assert h.sink.feedback == []

    run(test, known=lambda request_id: request_id.startswith("r"))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "empty"),
        (b'"r1"', "str, not an object"),
        (b'{"true_label": "cat"}', "request_id must be a non-empty string"),
        (b'{"request_id": "", "correct": true}', "request_id must be a non-empty string"),
        (b'{"request_id": "r1"}', "exactly one of true_label and correct"),
        (b'{"request_id": "r1", "true_label": "cat", "correct": true}', "exactly one of"),
        (b'{"request_id": "r1", "correct": 1}', "correct must be true or false, not 1"),
        (b'{"request_id": "r1", "true_label": 3}', "true_label must be a non-empty string"),
        (b'{"request_id": "r1", "correct": true, "label": "x"}', "unknown keys ['label']"),
        (b'[{"request_id": "r1", "correct": true}, {"request_id": "r2"}]', "item 1 must have exactly one"),
    ],
)
def test_malformed_feedback_is_422_naming_the_problem_and_stores_nothing(body: bytes, problem: str) -> None:
    async def test(h: Harness) -> None:
        answer = await h.client.post(
            "/v1/feedback", content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422 and problem in answer.json()["error"], answer.text
        assert h.sink.feedback == []
        assert h.metric("loopline_router_feedback_total", outcome="invalid") == 1

    run(test, known=lambda request_id: True)


def test_parse_feedback_reports_every_problem_at_once() -> None:
    with pytest.raises(FeedbackInvalid) as raised:
        parse_feedback(b'[{"request_id": 5, "correct": "yes"}, {"request_id": "r", "correct": true}, 7]')
    assert len(raised.value.problems) == 3
    assert "item 0" in raised.value.problems[0] and "item 2 is int" in raised.value.problems[2]


def test_feedback_without_an_event_store_is_503() -> None:
    async def test(h: Harness) -> None:
        answer = await h.client.post("/v1/feedback", json={"request_id": "r1", "correct": True})
        assert answer.status_code == 503 and "event store" in answer.json()["error"]

    run(test, known=None)


# --- the upstream client -----------------------------------------------------------------------------------


def test_upstream_pool_reuses_one_connection_with_tcp_nodelay() -> None:
    async def test() -> None:
        server = await FakeModelServer("1").start()
        pool = UpstreamPool(server.url)
        for _ in range(20):
            response = await pool.request(b"POST", b"/v1/predict", [(b"x-a", b"b")], b"body", 5)
            assert response.status == 200 and json.loads(response.body)["model_version"] == "1"
        assert server.connections == 1 and pool.idle_connections() == 1
        (connection,) = pool._idle
        assert connection.transport is not None
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # no Nagle wait on this side
        await pool.aclose()
        await server.stop()

    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_upstream_pool_reads_chunked_answers_and_retries_a_connection_closed_while_idle() -> None:
    async def test() -> None:
        server = await FakeModelServer("1", chunked=True).start()
        pool = UpstreamPool(server.url)
        first = await pool.request(b"POST", b"/v1/predict", [], b"", 5)
        assert json.loads(first.body)["predictions"][0]["label"] == "cat"
        (connection,) = pool._idle
        connection.closed = False  # as if its close had not been noticed yet: the request meets a dead socket
        assert connection.transport is not None
        connection.transport.abort()
        connection.closed = False
        second = await pool.request(b"POST", b"/v1/predict", [], b"", 5)
        assert second.status == 200 and server.connections == 2
        await pool.aclose()
        await server.stop()

    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_upstream_pool_skips_interim_answers_and_honours_connection_close() -> None:
    async def test() -> None:
        server = await FakeModelServer("1", interim=True, close=True).start()
        pool = UpstreamPool(server.url)
        for _ in range(3):
            response = await pool.request(b"POST", b"/v1/predict", [], b"", 5)
            assert response.status == 200 and json.loads(response.body)["model_version"] == "1"
        assert server.connections == 3 and pool.idle_connections() == 0
        await pool.aclose()
        await server.stop()

    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_upstream_pool_names_the_upstream_when_it_times_out_or_is_unreachable() -> None:
    async def test() -> None:
        server = await FakeModelServer("1", delay=1.0).start()
        pool = UpstreamPool(server.url)
        with pytest.raises(UpstreamError) as slow:
            await pool.request(b"POST", b"/v1/predict", [], b"", 0.05)
        assert slow.value.failure == "timeout" and pool.idle_connections() == 0  # a late answer is not reused
        with pytest.raises(UpstreamError) as refused:
            await UpstreamPool("http://127.0.0.1:9").request(b"POST", b"/", [], b"", 1)
        assert refused.value.failure == "unreachable" and "127.0.0.1:9" in str(refused.value)
        with pytest.raises(ValueError, match="plain HTTP"):
            UpstreamPool("https://example.com")
        await server.stop()

    asyncio.run(asyncio.wait_for(test(), timeout=30))


def test_a_challenger_failing_again_and_again_is_skipped_for_a_while() -> None:
    async def test(h: Harness) -> None:
        h.challenger.status = 500
        user = users_in("challenger", 0.5, 1)[0]
        reasons = [(await h.predict(user)).headers["X-Fallback"] for _ in range(5)]
        assert reasons == ["error"] * 3 + ["circuit_open"] * 2
        assert len(h.challenger.seen) == 3  # skipped while the breaker is open
        assert all(row.fallback and row.variant == "challenger" for row in h.sink.requests)
        h.challenger.status = 200
        await asyncio.sleep(0.25)
        answer = await h.predict(user)
        assert answer.headers["X-Variant"] == "challenger" and "x-fallback" not in answer.headers

    run(test, breaker_failures=3, breaker_seconds=0.2)


def test_a_client_gone_before_its_body_is_complete_is_neither_forwarded_nor_recorded() -> None:
    async def test(h: Harness) -> None:
        messages: list[Message] = [
            {"type": "http.request", "body": b"part", "more_body": True},
            {"type": "http.disconnect"},
        ]

        async def receive() -> Message:
            return messages.pop(0)

        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": [], "query_string": b""}
        await h.router(scope, receive, send)
        assert sent == [] and h.sink.requests == [] and h.champion.seen == h.challenger.seen == []

    run(test)


def test_the_sink_is_closed_when_the_router_shuts_down() -> None:
    """uvicorn re-raises SIGTERM once its shutdown is done: a buffered writer must be flushed during the
    lifespan shutdown, not after the server returns."""

    class ClosingSink(MemorySink):
        closed = 0

        def close(self) -> dict[str, int]:
            self.closed += 1
            return {"written": len(self.requests)}

    sink = ClosingSink()

    async def lifespan() -> None:
        router = create_router(RouterSettings(), lambda: None, sink, None)
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent: list[str] = []

        async def receive() -> dict[str, str]:
            return next(messages)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await router({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
        assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    asyncio.run(asyncio.wait_for(lifespan(), timeout=10))
    assert sink.closed == 1


class MemorySampler:
    def __init__(self) -> None:
        self.offered: list[tuple[str, bytes]] = []
        self.closed = False

    def offer(self, request_id: str, body: bytes) -> None:
        self.offered.append((request_id, body))

    def close(self) -> None:
        self.closed = True


def test_each_image_answered_200_is_offered_to_the_sampler_and_nothing_else() -> None:
    sampler = MemorySampler()

    async def test(h: Harness) -> None:
        answered = await h.predict("u1", **{"X-Request-Id": "kept-1"})
        assert answered.status_code == 200
        h.champion.status = h.challenger.status = 500
        failed = await h.client.post("/v1/predict", content=b"\x89PNG x", headers={"X-User-Id": "u2"})
        assert failed.status_code == 500
        h.champion.status = h.challenger.status = 200
        await h.client.post("/v2/models/m/infer", json={"inputs": []}, headers={"X-User-Id": "u3"})

    run(test, sampler=sampler)
    assert sampler.offered == [("kept-1", b"\x89PNG fake")]  # not the 500, not the v2 tensors
    assert sampler.closed  # closed with the router, so what it holds is written
