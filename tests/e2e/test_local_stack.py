"""The README's first command: `make run` (scripts/stack.sh run) brings up PostgreSQL, the
broker and the four services, every /readyz answers 200, an event goes through, and Ctrl-C
stops everything it started. Runs on its own ports and run directory."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

from conftest import BIN, ROOT, free_port, http, wait_until


def test_make_run_brings_the_stack_up_and_ctrl_c_stops_it():
    run_dir = tempfile.mkdtemp(prefix="agentbus-e2e-stack-")
    os.chmod(run_dir, 0o755)  # the throwaway PostgreSQL runs as the postgres user
    ports = {name: free_port() for name in ("INGRESS_OPS", "DISPATCHER_OPS", "LLM_WORKER_OPS",
                                            "NOTIFIER_OPS", "INGRESS_API", "INGRESS_WEBHOOK")}
    env = dict(os.environ, AGENTBUS_RUN_DIR=run_dir, AGENTBUS_BIN=BIN,
               AGENTBUS_PG_PORT=str(free_port()), AGENTBUS_READY_TIMEOUT="120")
    env.pop("DATABASE_URL", None)
    for name, port in ports.items():
        env[f"AGENTBUS_{name}_PORT"] = str(port)
    log = open(os.path.join(run_dir, "stack.out"), "wb")
    proc = subprocess.Popen([os.path.join(ROOT, "scripts", "stack.sh"), "run"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for name in ("INGRESS_OPS", "DISPATCHER_OPS", "LLM_WORKER_OPS", "NOTIFIER_OPS"):
            url = f"http://127.0.0.1:{ports[name]}/readyz"
            wait_until(lambda: _ok(url) or proc.poll() is not None, 150, 0.5, url)
            assert proc.poll() is None, open(os.path.join(run_dir, "stack.out")).read()
        out = wait_until(lambda: _banner(run_dir), 30, what="the banner")
        assert f"http://127.0.0.1:{ports['INGRESS_API']}" in out

        token = open(os.path.join(run_dir, "admin-token")).read().strip()
        status, body, _ = http("POST", f"http://127.0.0.1:{ports['INGRESS_API']}/api/admin/events",
                               {"type": "stack.hello", "data": {"x": 1}},
                               {"Authorization": "Bearer " + token})
        assert status == 202, body
        url = subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "status", os.path.join(run_dir, "pg")],
                             capture_output=True, text=True, check=True).stdout.strip()
        wait_until(lambda: subprocess.run(["psql", url, "-tAqX", "-c",
                                           f"SELECT count(*) FROM event_log WHERE id = '{body['id']}'"],
                                          capture_output=True, text=True).stdout.strip() == "1",
                   30, what="the event in the stack's database")

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(timeout=90) == 0
        for name in ("ingress", "dispatcher", "llm-worker", "notifier", "devbroker"):
            assert not os.path.exists(os.path.join(run_dir, "pids", f"{name}.pid")), name
        assert not _ok(f"http://127.0.0.1:{ports['INGRESS_OPS']}/livez")
        assert subprocess.run([os.path.join(ROOT, "scripts", "pg.sh"), "status", os.path.join(run_dir, "pg")],
                              capture_output=True).returncode != 0, "PostgreSQL still runs"
        leftovers = subprocess.run(["pgrep", "-f", run_dir], capture_output=True, text=True).stdout.split()
        assert not leftovers, f"processes of the stack still run: {leftovers}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "down"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)
        log.close()
        time.sleep(0.5)
        shutil.rmtree(run_dir, ignore_errors=True)


def _ok(url):
    try:
        return http("GET", url, timeout=3)[0] == 200
    except OSError:
        return False


def _banner(run_dir):
    out = open(os.path.join(run_dir, "stack.out")).read()
    return out if "agentbus is up." in out else None
