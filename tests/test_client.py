"""The Python client distribution (clients/python) against the real daemon: over HTTP
(blocking and asyncio), straight into Redis (also while no daemon runs) and to RabbitMQ;
its errors; its tokens; and installed with plain pip into a fresh virtualenv without
Twisted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cyclone_sse_client import (
    AmqpPublisher,
    AsyncPublisher,
    BadRequest,
    PayloadTooLarge,
    Publisher,
    RedisPublisher,
    Unauthorized,
    Unavailable,
    make_token,
    send_event,
)
from tests.daemon import DEADLINE, Daemon, SSEClient
from tests.services import amqp_exchange, free_port, redis_prefix  # noqa: F401
from tests.test_amqp import amqp_daemon
from tests.test_redis import redis_daemon

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"


@pytest.fixture
def daemon(tmp_path):
    daemon = Daemon(tmp_path, "--http-secret=k3y", "--max-body=2000")
    yield daemon
    daemon.stop()


def test_http_publish_with_names_ids_and_several_channels(daemon):
    a, b = SSEClient(daemon.port, "channels=a"), SSEClient(daemon.port, "channels=b")
    publisher = Publisher(f"http://127.0.0.1:{daemon.port}", key="k3y")
    first = publisher.publish(["a", "b"], {"price": 12}, event="update", id="order-1")
    assert [(p.channel, p.subscribers, p.duplicate) for p in first] == \
        [("a", 1, False), ("b", 1, False)]
    for stream, published in ((a, first[0]), (b, first[1])):
        assert stream.events(1)[0] == {"id": published.id, "event": "update",
                                       "data": '{"price":12}'}
    again = publisher.publish(["a", "b"], {"price": 12}, event="update", id="order-1")
    assert [p.duplicate for p in again] == [True, True]  # a retry is kept once
    assert [p.id for p in again] == [p.id for p in first]
    send_event("a", "plain text", url=f"http://127.0.0.1:{daemon.port}", key="k3y")
    assert a.events(2)[1]["data"] == "plain text"


def test_http_errors_raise_the_documented_exceptions(daemon):
    url = f"http://127.0.0.1:{daemon.port}"
    with pytest.raises(Unauthorized) as wrong:
        Publisher(url, key="nope").publish("a", "x")
    assert wrong.value.status == 401
    with pytest.raises(PayloadTooLarge):
        Publisher(url, key="k3y").publish("a", "x" * 5000)
    with pytest.raises(BadRequest) as bad:
        Publisher(url, key="k3y").publish("bad channel", "x")
    assert "channel" in bad.value.reason
    down = Publisher(f"http://127.0.0.1:{free_port()}", timeout=2, retries=2, backoff=0.01)
    with pytest.raises(Unavailable) as gone:
        down.publish("a", "x")
    assert isinstance(gone.value.__cause__, ConnectionRefusedError)


def test_asyncio_publish_and_errors(daemon):
    url = f"http://127.0.0.1:{daemon.port}"
    stream = SSEClient(daemon.port, "channels=a")

    async def run():
        published = await AsyncPublisher(url, key="k3y").publish("a", [1, 2], event="e")
        with pytest.raises(Unauthorized):
            await AsyncPublisher(url).publish("a", "x")
        with pytest.raises(Unavailable):
            await AsyncPublisher(f"http://127.0.0.1:{free_port()}", retries=0).publish("a", "x")
        return published

    published = asyncio.run(run())
    assert stream.events(1)[0] == {"id": published[0].id, "event": "e", "data": "[1,2]"}


def test_redis_publish_is_durable_while_no_daemon_runs(tmp_path, redis_prefix):  # noqa: F811
    redis = RedisPublisher("redis://127.0.0.1:6379/0", prefix=redis_prefix)
    first = redis_daemon(tmp_path, redis_prefix)
    try:
        stream = SSEClient(first.port, "channels=news")
        seen = redis.publish("news", {"n": 1}, event="tick", id="n1")[0]
        assert seen.subscribers >= 1  # a daemon's Redis connection heard the announcement
        assert stream.events(1)[0] == {"id": seen.id, "event": "tick", "data": '{"n":1}'}
    finally:
        first.stop()
    missed = [redis.publish("news", f"missed {n}")[0] for n in range(2)]  # no daemon now
    assert redis.publish("news", {"n": 1}, event="tick", id="n1")[0].duplicate
    second = redis_daemon(tmp_path, redis_prefix)
    try:
        resumed = SSEClient(second.port, f"channels=news&lastEventId={seen.id}")
        assert [(e["id"], e["data"]) for e in resumed.events(2)] == \
            [(m.id, f"missed {n}") for n, m in enumerate(missed)]
    finally:
        second.stop()
        redis.close()
    with pytest.raises(Unavailable):
        RedisPublisher(f"redis://127.0.0.1:{free_port()}/0", timeout=1).publish("a", "x")


def test_amqp_publish_reaches_the_daemons_subscribers(tmp_path, amqp_exchange):  # noqa: F811
    daemon = amqp_daemon(tmp_path, amqp_exchange)
    amqp = AmqpPublisher(exchange=amqp_exchange)
    try:
        stream = SSEClient(daemon.port, "channels=orders")
        amqp.publish("orders", {"id": 7}, event="created", id="order-7")
        event = stream.events(1)[0]
        assert (event["event"], event["data"]) == ("created", '{"id":7}')
    finally:
        amqp.close()
        daemon.stop()
    with pytest.raises(Unavailable):
        AmqpPublisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", timeout=1).publish(
            "a", "x")


def test_a_token_from_the_client_opens_a_user_channel(tmp_path):
    daemon = Daemon(tmp_path, "--jwt-secret=" + "s" * 32, "--http-secret=k3y")
    try:
        token = make_token("s" * 32, sub="42", ttl=60)
        stream = SSEClient(daemon.port, f"channels=user%2342&token={token}")
        assert stream.status == 200
        refused = SSEClient(daemon.port, f"channels=user%2343&token={token}")
        assert refused.status == 403
        Publisher(f"http://127.0.0.1:{daemon.port}", key="k3y").publish("user#42", "hi")
        assert stream.events(1)[0]["data"] == "hi"
    finally:
        daemon.stop()


def test_the_client_checks_names_by_the_daemons_rules(redis_prefix):  # noqa: F811
    from cyclone_sse.channels import _NAME
    from cyclone_sse.event import RESERVED_EVENTS
    from cyclone_sse_client import checks
    assert checks.CHANNEL.pattern == _NAME.pattern
    assert checks.RESERVED_EVENTS == RESERVED_EVENTS
    redis = RedisPublisher(prefix=redis_prefix)
    for channel, event in (("bad channel", None), ("a", "history-gap"), ("a", "x\ny")):
        with pytest.raises(BadRequest):
            redis.publish(channel, "x", event=event)
    redis.close()


def test_the_client_appends_with_the_daemons_own_scripts():
    from cyclone_sse.history.redis_scripts import FOR_PUBLISHERS
    for name, body in FOR_PUBLISHERS.items():
        folder = CLIENT / "cyclone_sse_client" / "lua"
        assert (folder / name).read_text() == body, \
            f"regenerate: python -m cyclone_sse.history.redis_scripts {folder}"


def test_plain_pip_installs_the_client_into_a_fresh_virtualenv_without_twisted(
        tmp_path, daemon):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    str(CLIENT)], check=True, timeout=300)
    subprocess.run([str(python), "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(CLIENT)],
                   check=True, timeout=300)
    assert list((tmp_path / "dist").glob("cyclone_sse_client-*.whl"))
    script = (
        "import json, sys\n"
        "import cyclone_sse_client as c\n"
        "from importlib import resources\n"
        "assert (resources.files('cyclone_sse_client') / 'lua' / 'append.lua').is_file()\n"
        f"answer = c.Publisher('http://127.0.0.1:{daemon.port}', key='k3y').publish("
        "'a', {'from': 'venv'})\n"
        "print(json.dumps({'twisted': any(m.split('.')[0] == 'twisted' for m in sys.modules),"
        " 'id': answer[0].id}))\n")
    stream = SSEClient(daemon.port, "channels=a")
    done = subprocess.run([str(python), "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["twisted"] is False
    with pytest.raises(subprocess.CalledProcessError):  # Twisted is not even there
        subprocess.run([str(python), "-c", "import twisted"], check=True, cwd=tmp_path,
                       capture_output=True, timeout=DEADLINE)
    assert stream.events(1)[0] == {"id": report["id"], "event": "message",
                                   "data": '{"from":"venv"}'}


def test_batches_over_http_and_into_redis(daemon, redis_prefix):  # noqa: F811
    stream = SSEClient(daemon.port, "channels=a,b")
    events = [{"channel": "a", "data": n, "id": f"b{n}"} for n in range(3)]
    events.append({"channels": ["a", "b"], "data": {"last": True}, "event": "end"})
    published = Publisher(f"http://127.0.0.1:{daemon.port}", key="k3y").publish_many(events)
    assert [p.channel for p in published] == ["a", "a", "a", "a", "b"]
    got = stream.events(5)
    assert [(e["event"], e["data"]) for e in got] == [
        ("message", "0"), ("message", "1"), ("message", "2"), ("end", '{"last":true}'),
        ("end", '{"last":true}')]
    assert [e["id"] for e in got] == [p.id for p in published]
    again = asyncio.run(AsyncPublisher(f"http://127.0.0.1:{daemon.port}", key="k3y")
                        .publish_many(events[:3]))
    assert [p.duplicate for p in again] == [True, True, True]
    redis = RedisPublisher(prefix=redis_prefix)
    stored = redis.publish_many([{"channel": "r", "data": str(n)} for n in range(100)])
    seqs = [int(p.id.rsplit("-", 1)[1]) for p in stored]
    assert seqs == sorted(seqs) and len(set(seqs)) == 100  # in order, each once
    redis.close()
