"""The gateway long poll (GET /api/gateway/poll?wait=N) on the real binaries: woken by the
dispatcher's PostgreSQL NOTIFY through ingress' listener thread, holding no database
connection while it waits. Behaviour only, never speed (that is measured in bench/): a
message sent while a poll waits is returned by that poll, long before its wait is over;
concurrent polls of different agents each get their own; the poll survives the listener's
connection being killed; SIGTERM ends waiting polls and the process exits 0; a lease that
runs out during a long poll is delivered to it."""
import threading
import time
import uuid

from conftest import ADMIN_TOKEN, http, wait_until

ADMIN = {"Authorization": "Bearer " + ADMIN_TOKEN}
LISTENER = "agentbus-ingress-listener"  # application_name of ingress' LISTEN connection


class Inbox:
    """A tenant with a sending OpenClaw agent, and agents with keys to poll as."""

    def __init__(self, stack, **ingress_env):
        self.stack = stack
        self.ingress = stack.start("ingress", **ingress_env)
        stack.start("dispatcher")
        self.tenant = stack.sql(f"INSERT INTO tenants (name) VALUES ('lp-{uuid.uuid4().hex[:6]}') RETURNING id")
        self.keys = {}
        self.sender = self.agent("Sender")

    def agent(self, name):
        agent = self.stack.sql(f"INSERT INTO agents (tenant_id, name, type) VALUES ('{self.tenant}', "
                               f"'{name}', 'openclaw') RETURNING id")
        status, body, _ = http("POST", f"{self.stack.api}/api/gateway/agents/{agent}/api-key", b"", ADMIN)
        assert status == 201, body
        self.keys[agent] = body["api_key"]
        return agent

    def send(self, target_name, content):
        status, body, _ = http("POST", self.stack.api + "/api/gateway/send-message",
                               {"target": target_name, "content": content},
                               {"X-Api-Key": self.keys[self.sender], "Content-Type": "application/json"})
        assert status == 200, body

    def poll(self, agent, wait):
        """(status, body, seconds the call took)."""
        started = time.monotonic()
        status, body, _ = http("GET", f"{self.stack.api}/api/gateway/poll?wait={wait}", None,
                               {"X-Api-Key": self.keys[agent]}, timeout=wait + 30)
        return status, body, time.monotonic() - started

    def poll_in_background(self, agent, wait):
        """Starts a poll on a thread; returns (thread, result dict filled when it is done)."""
        result = {}

        def run():
            result["status"], result["body"], result["took"] = self.poll(agent, wait)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result

    def waiting(self, n):
        """Blocks until ingress reports n long polls waiting."""
        wait_until(lambda: self.ingress.metric("agentbus_gateway_polls_waiting") == n, 20,
                   what=f"{n} long polls waiting")

    def notifications(self):
        return self.ingress.metric("agentbus_gateway_inbox_notifications_total")

    def listener_pids(self):
        out = self.stack.sql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
                             f" WHERE application_name = '{LISTENER}' AND datname = current_database()")
        return out.split(",") if out else []


def contents(body):
    return [m["content"] for m in body["messages"]]


def test_a_long_poll_returns_the_message_sent_while_it_waits(stack):
    box = Inbox(stack)
    bob = box.agent("Bob")
    wait_until(box.listener_pids, 20, what="the inbox listener")
    t, result = box.poll_in_background(bob, 20)
    box.waiting(1)
    before = box.notifications()
    box.send("Bob", "wake up")
    t.join(timeout=40)
    assert result["status"] == 200, result
    assert contents(result["body"]) == ["wake up"]
    assert result["took"] < 10  # functional: it ended on the message, not at the end of its wait
    # The dispatcher's NOTIFY reached the listener, and the poll no longer waits.
    wait_until(lambda: box.notifications() > before, 10, what="the notification")
    box.waiting(0)
    # A poll without wait answers at once and never registers as waiting.
    status, body, _ = box.poll(bob, 0)
    assert status == 200 and body["messages"] == []


def test_concurrent_long_polls_of_different_agents_each_get_only_their_own_message(stack):
    box = Inbox(stack)
    names = [f"Agent{i}" for i in range(8)]
    agents = {name: box.agent(name) for name in names}
    polls = {name: box.poll_in_background(agents[name], 20) for name in names}
    box.waiting(len(names))
    for name in reversed(names):
        box.send(name, f"for {name}")
    for name, (t, result) in polls.items():
        t.join(timeout=40)
        assert result["status"] == 200, (name, result)
        assert contents(result["body"]) == [f"for {name}"], name
        assert result["took"] < 10, name
    box.waiting(0)
    # Nothing was leased to anyone else, and nothing is left over.
    assert stack.sql("SELECT count(*) FROM gateway_messages WHERE status = 'leased'") == str(len(names))
    for name in names:
        assert box.poll(agents[name], 0)[1]["messages"] == []


def test_a_long_poll_survives_the_listener_connection_being_killed(stack):
    box = Inbox(stack)
    bob = box.agent("Bob")
    [old] = wait_until(box.listener_pids, 20, what="the inbox listener")
    t, result = box.poll_in_background(bob, 25)
    box.waiting(1)
    stack.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{LISTENER}'"
              " AND datname = current_database()")
    # The listener notices, reconnects and LISTENs again on a new backend.
    [new] = wait_until(lambda: [p for p in box.listener_pids() if p != old], 30, what="a new listener")
    assert new != old
    wait_until(lambda: box.ingress.metric("agentbus_gateway_inbox_listener_connected") == 1, 10,
               what="the listener connected again")
    assert box.ingress.metric("agentbus_gateway_inbox_listener_reconnects_total") == 1
    assert t.is_alive(), result  # the waiting poll was not failed by the outage
    before = box.notifications()
    box.send("Bob", "after the kill")
    t.join(timeout=40)
    assert result["status"] == 200, result
    assert contents(result["body"]) == ["after the kill"]
    assert result["took"] < 20  # before its 25 s wait ran out
    wait_until(lambda: box.notifications() > before, 10, what="a notification on the new connection")
    # One outage, one warning.
    assert box.ingress.logs().count("inbox listener lost its PostgreSQL connection") == 1


def test_sigterm_ends_waiting_long_polls_and_ingress_exits_0(stack):
    box = Inbox(stack)
    agents = [box.agent(f"Waiter{i}") for i in range(3)]
    polls = [box.poll_in_background(agent, 30) for agent in agents]
    box.waiting(len(agents))
    started = time.monotonic()
    assert box.ingress.stop() == 0
    assert time.monotonic() - started < 15  # not held for the 30 s of the waits
    for t, result in polls:
        t.join(timeout=10)
        assert not t.is_alive()
        assert result["status"] == 200, result
        assert result["body"]["messages"] == []
        assert result["took"] < 20
    assert "agentbus-ingress stopped" in box.ingress.logs()


def test_a_lease_that_runs_out_during_a_long_poll_is_delivered_to_it(stack):
    box = Inbox(stack, AGENTBUS_GATEWAY_LEASE_S="5")
    bob = box.agent("Bob")
    box.send("Bob", "unreported")
    first = wait_until(lambda: box.poll(bob, 1)[1]["messages"], 30, what="the first delivery")
    [msg] = first
    # Leased now: a long poll finds nothing at first, and gets it once the lease runs out
    # (nothing notifies that; the poll itself knows when the lease ends).
    status, body, took = box.poll(bob, 20)
    assert status == 200, body
    assert [m["id"] for m in body["messages"]] == [msg["id"]]
    assert took < 15  # the lease is 5 s; the wait 20 s
    assert stack.sql(f"SELECT delivery_count FROM gateway_messages WHERE id = '{msg['id']}'") == "2"
