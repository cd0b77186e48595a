"""The benchmark: the app's endpoints against the bare-framework ceiling, measured in one run.

    python bench/run.py                       # SQLite, empty and with 1,000,000 messages
    python bench/run.py --postgres postgresql://postgres@127.0.0.1:5432/bench
    python bench/run.py --webhooks            # also with every event sent to a receiver

Load comes from wrk (installed with apt-get when missing), 16 connections. Each round runs the
ceiling (a bare Flask view on the same waitress settings) and then every endpoint, so each
endpoint's ratio is taken against the ceiling of its own round; the report gives the median
over the rounds. Rate limits are off for the run. Results go to bench/results.md.
"""
import argparse
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, ROOT)

CONNECTIONS = 16
THREADS = 16
TARGETS = {"send": 0.40, "create": 0.33, "poll": 0.45}
P99_FACTOR = 3
RSS_LIMIT_MB = 60
GROWTH_FACTOR = 1.25


# --- processes ------------------------------------------------------------------------------

def ensure_wrk():
    if shutil.which("wrk"):
        return
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)


def sqlite_only_python():
    """An interpreter with only requirements.txt installed: what a SQLite deployment runs
    (without the PostgreSQL driver, whose libraries add ~20 MB of RSS)."""
    venv = os.path.join(BENCH, ".venv-sqlite")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "-r",
                        os.path.join(ROOT, "requirements.txt")], check=True)
    return python


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, command, env=None, cwd=ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
                       "WAITRESS_THREADS": str(THREADS), "RATELIMIT_ENABLED": "false",
                       **(env or {})}
        command = [part.format(port=self.port) for part in command]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (the server's lifetime: stop() closes it)
        self.process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.peak_rss_mb = 0.0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1)
                return
            except OSError as error:
                if getattr(error, "code", None):  # an HTTP answer: the server is up
                    return
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {command}")

    def rss_mb(self):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_seconds(self):
        """User and system CPU time of the server process so far, all its threads."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def app_server(python, database_url, env=None):
    # The open-chat cap is raised: `create` opens thousands of chats per user in a run.
    return Server([python, "app.py"], env={"DATABASE_URL": database_url,
                                           "MAX_OPEN_CHATS": "1000000", **(env or {})})


def webhook_receiver():
    """bench/receiver.py on a free port: (process, its URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, os.path.join(BENCH, "receiver.py"), str(port)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    return process, f"http://127.0.0.1:{port}/hook"


def ceiling_server():
    return Server([sys.executable, "-m", "waitress", "--host=127.0.0.1", "--port={port}",
                   f"--threads={THREADS}", "--call", "ceiling:create_app"], cwd=BENCH)


# --- load ---------------------------------------------------------------------------------

def lua_list(values):
    return "{" + ",".join(json.dumps(value) for value in values) + "}"


def lua_script(method, paths, bodies, tokens):
    return f"""
local paths = {lua_list(paths)}
local bodies = {lua_list(bodies)}
local tokens = {lua_list(tokens)}
local i = 0
request = function()
  i = i % #tokens + 1
  local headers = {{["Authorization"] = "Bearer " .. tokens[i]}}
  if #bodies > 0 then headers["Content-Type"] = "application/json" end
  return wrk.format("{method}", paths[(i - 1) % #paths + 1], headers,
                    #bodies > 0 and bodies[i] or nil)
end
"""


def scripts(credentials, directory):
    """One wrk script per endpoint, cycling over many users and chats."""
    users, chats = credentials["users"], credentials["chats"][:2000]
    pairs = [(chat, users[chat["user"]]) for chat in chats]
    per_chat = credentials["messages_per_chat"]
    bodies = {
        "send": [json.dumps({"data": {"chat_id": chat["chat_id"], "email": user["email"],
                                      "message": "Where can I find my subscription URL?"}})
                 for chat, user in pairs],
        "create": [json.dumps({"data": {"email": user["email"], "name": "Premium Plan",
                                        "plan_id": 5, "created_at": 1679223400,
                                        "message": "Hi, I have a quick question!"}})
                   for user in users],
        # A client following its cursor: the last few messages, at most 10.
        "poll": [json.dumps({"data": {"chat_id": chat["chat_id"], "email": user["email"],
                                      "after": max(0, per_chat - 5), "limit": 10}})
                 for chat, user in pairs],
    }
    files = {}
    for name, method, path, body_list, tokens in [
        ("send", "POST", "/api/client/live/chat", bodies["send"],
         [user["token"] for _, user in pairs]),
        ("create", "POST", "/api/client/live/create", bodies["create"],
         [user["token"] for user in users]),
        ("poll", "POST", "/api/client/live/messages", bodies["poll"],
         [user["token"] for _, user in pairs]),
        ("agent list", "GET", "/api/agent/chats?status=open&limit=20", [],
         [credentials["agent_token"]]),
    ]:
        files[name] = os.path.join(directory, name.replace(" ", "_") + ".lua")
        with open(files[name], "w") as handle:
            handle.write(lua_script(method, [path], body_list, tokens))
    files["ceiling"] = os.path.join(directory, "ceiling.lua")
    with open(files["ceiling"], "w") as handle:
        handle.write(lua_script("POST", ["/"], [bodies["send"][0]], ["x"]))
    return files


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_latency(text, percentile):
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    return float(match.group(1)) * UNITS[match.group(2)]


def wrk(url, script, duration, connections=CONNECTIONS):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency",
                          "-s", script, url], capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": parse_latency(out, 50), "p99": parse_latency(out, 99),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "errors": sum(int(n) for n in errors.groups()) if errors else 0}


def wrk_split(servers, script, duration):
    """wrk against several servers at once, the connections shared out; figures summed, plus
    the CPU cores the servers used meanwhile."""
    results = [None] * len(servers)
    cpu_before, started = sum(s.cpu_seconds() for s in servers), time.monotonic()

    def run(index):
        results[index] = wrk(servers[index].url, script, duration,
                             CONNECTIONS // len(servers))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(servers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cores = (sum(s.cpu_seconds() for s in servers) - cpu_before) / (time.monotonic() - started)
    return {"rps": sum(r["rps"] for r in results), "p50": max(r["p50"] for r in results),
            "cores": cores,
            "p99": max(r["p99"] for r in results),
            "non_2xx": sum(r["non_2xx"] for r in results),
            "errors": sum(r["errors"] for r in results)}


def sample_rss(servers, stop):
    while not stop.is_set():
        for server in servers:
            server.peak_rss_mb = max(server.peak_rss_mb, server.rss_mb())
        time.sleep(0.2)


ENDPOINTS = ["send", "create", "poll", "agent list"]


def measure(label, servers, ceiling, files, rounds, duration):
    """Alternate ceiling and endpoints over the rounds; medians and ratios per endpoint."""
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(servers, stop), daemon=True)
    sampler.start()
    per_round = []
    for number in range(rounds):
        row = {"ceiling": wrk_split([ceiling], files["ceiling"], duration)}
        for name in ENDPOINTS:
            row[name] = wrk_split(servers, files[name], duration)
        per_round.append(row)
        print(f"  {label} round {number + 1}: " + ", ".join(
            f"{name} {row[name]['rps']:.0f}/s" for name in ["ceiling", *ENDPOINTS]), flush=True)
    stop.set()
    sampler.join()
    summary = {"label": label, "rss_mb": max(s.peak_rss_mb for s in servers), "endpoints": {}}
    for name in ["ceiling", *ENDPOINTS]:
        runs = [row[name] for row in per_round]
        summary["endpoints"][name] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "ratio": statistics.median(row[name]["rps"] / row["ceiling"]["rps"]
                                       for row in per_round),
            "p50": statistics.median(r["p50"] for r in runs),
            "p99": statistics.median(r["p99"] for r in runs),
            "cores": statistics.median(r["cores"] for r in runs),
            "p99_ratio": statistics.median(row[name]["p99"] / row["ceiling"]["p99"]
                                           for row in per_round),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "errors": sum(r["errors"] for r in runs)}
    return summary


# --- databases ------------------------------------------------------------------------------

def seed(url, users, chats, messages):
    from seed import seed as seed_database  # bench/seed.py, beside this file

    credentials = seed_database(url, users, chats, messages)
    credentials["messages_per_chat"] = max(1, messages // chats)
    return credentials


def reset_postgres(url):
    """Empty the benchmark's database, creating it first when the server has none by that
    name."""
    import psycopg
    from psycopg import sql

    try:
        connection = psycopg.connect(url, autocommit=True)
    except psycopg.OperationalError as error:
        if "does not exist" not in str(error):
            raise
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(url, dbname="postgres", autocommit=True) as server:
            server.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        connection = psycopg.connect(url, autocommit=True)
    with connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


def agent_list_plan(url):
    """The agent chat list's query plan, to show it stays on an index."""
    import models
    from chat import chats
    from storage import queries

    models.configure_database(url)
    statement, params = chats.chat_list_call(chats.AGENT, chats.ChatListQuery("open"))
    plan = queries.explain(statement, params)
    models.database.close_all()
    return "\n".join(plan)


# --- the report -------------------------------------------------------------------------------

def machine():
    with open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "unknown")
    with open("/proc/meminfo") as meminfo:
        memory_gb = int(meminfo.readline().split()[1]) / 1024 / 1024
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return (f"{os.cpu_count()} × {model}, {memory_gb:.0f} GiB RAM, Linux "
            f"{platform.release()}, Python {platform.python_version()}, SQLite "
            f"{sqlite3.sqlite_version}, wrk {wrk_version}")


def table(summary, reference=None):
    lines = [f"### {summary['label']}", "",
             f"Peak server RSS under load: **{summary['rss_mb']:.1f} MB**", "",
             "| endpoint | req/s | × ceiling | p50 ms | p99 ms | p99 × ceiling's | non-2xx "
             "| server CPU, cores |" + (" vs empty |" if reference else ""),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
             + (" ---: |" if reference else "")]
    for name, figures in summary["endpoints"].items():
        line = (f"| {name} | {figures['rps']:.0f} | {figures['ratio']:.2f} | "
                f"{figures['p50']:.1f} | {figures['p99']:.1f} | {figures['p99_ratio']:.1f} | "
                f"{figures['non_2xx'] + figures['errors']} | {figures['cores']:.2f} |")
        if reference:
            base = reference["endpoints"][name]["rps"]
            line += f" {base / figures['rps']:.2f}× slower |" if name != "ceiling" else " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def verdicts(summary, growth=None):
    """Each target, met or not, in words."""
    lines = []
    figures = summary["endpoints"]
    for name, target in TARGETS.items():
        ratio = figures[name]["ratio"]
        lines.append(f"- {name} ≥ {target:.2f} × ceiling: {ratio:.2f} "
                     f"{'met' if ratio >= target else 'NOT met'}")
    worst = max(figures[name]["p99_ratio"] for name in ENDPOINTS)
    lines.append(f"- every p99 ≤ {P99_FACTOR} × the ceiling's: worst {worst:.1f} × "
                 f"{'met' if worst <= P99_FACTOR else 'NOT met'}")
    failed = sum(figures[name]["non_2xx"] + figures[name]["errors"] for name in ENDPOINTS)
    lines.append(f"- zero non-2xx: {failed} {'met' if failed == 0 else 'NOT met'}")
    lines.append(f"- RSS ≤ {RSS_LIMIT_MB} MB: {summary['rss_mb']:.1f} MB "
                 f"{'met' if summary['rss_mb'] <= RSS_LIMIT_MB else 'NOT met'}")
    if growth:
        for name in ["send", "poll"]:
            slower = figures[name]["rps"] / growth["endpoints"][name]["rps"]
            lines.append(f"- {name} with 1,000,000 messages within {GROWTH_FACTOR} × of empty: "
                         f"{slower:.2f} × {'met' if slower <= GROWTH_FACTOR else 'NOT met'}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--postgres", metavar="URL",
                        help="also run on this PostgreSQL database (it is emptied)")
    parser.add_argument("--no-growth", action="store_true",
                        help="skip the run with 1,000,000 stored messages")
    parser.add_argument("--webhooks", action="store_true",
                        help="also run with every event delivered to a local webhook receiver")
    parser.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    args = parser.parse_args()
    if args.rounds < 3:
        parser.error("at least 3 rounds")

    ensure_wrk()
    python = sqlite_only_python()
    workdir = tempfile.mkdtemp(prefix="supportzen-bench-")
    ceiling = ceiling_server()
    summaries, plans = [], {}
    try:
        print("SQLite, 1,000 users, 1,000 chats, 10,000 messages", flush=True)
        url = f"sqlite:///{workdir}/small.db"
        files = scripts(seed(url, 1000, 1000, 10_000), workdir)
        server = app_server(python, url)
        empty = measure("SQLite: 1,000 chats, 10,000 messages", [server], ceiling, files,
                        args.rounds, args.duration)
        server.stop()
        summaries.append(empty)
        plans["SQLite, 10,000 messages"] = agent_list_plan(url)

        if args.webhooks:
            print("SQLite, the same, with every event sent to a webhook receiver", flush=True)
            url = f"sqlite:///{workdir}/hooked.db"
            files = scripts(seed(url, 1000, 1000, 10_000), workdir)
            receiver, receiver_url = webhook_receiver()
            server = app_server(python, url, env={
                "WEBHOOK_URL": receiver_url, "WEBHOOK_SECRET": "bench-" + "s" * 32})
            summaries.append(measure("SQLite: 1,000 chats, 10,000 messages, every event "
                                     "delivered to a webhook receiver meanwhile", [server],
                                     ceiling, files, args.rounds, args.duration))
            server.stop()
            receiver.terminate()
            print(f"webhook receiver: {receiver.communicate(timeout=10)[0].strip()}",
                  flush=True)

        growth = None
        if not args.no_growth:
            print("SQLite, 1,000 users, 10,000 chats, 1,000,000 messages", flush=True)
            url = f"sqlite:///{workdir}/large.db"
            started = time.monotonic()
            files = scripts(seed(url, 1000, 10_000, 1_000_000), workdir)
            seeded = time.monotonic() - started
            server = app_server(python, url)
            growth = measure(f"SQLite: 10,000 chats, 1,000,000 messages (seeded in "
                             f"{seeded:.0f} s)", [server], ceiling, files, args.rounds,
                             args.duration)
            server.stop()
            summaries.append(growth)
            plans["SQLite, 1,000,000 messages"] = agent_list_plan(url)

        if args.postgres:
            print("PostgreSQL, 1,000 users, 1,000 chats, 10,000 messages", flush=True)
            reset_postgres(args.postgres)
            files = scripts(seed(args.postgres, 1000, 1000, 10_000), workdir)
            one = app_server(sys.executable, args.postgres)
            summaries.append(measure("PostgreSQL, one waitress process", [one], ceiling,
                                     files, args.rounds, args.duration))
            two = app_server(sys.executable, args.postgres)
            summaries.append(measure("PostgreSQL, two waitress processes (8 connections "
                                     "each; RSS is per process)", [one, two], ceiling, files,
                                     args.rounds, args.duration))
            one.stop()
            two.stop()
            plans["PostgreSQL, 10,000 messages"] = agent_list_plan(args.postgres)
    finally:
        ceiling.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    report = [
        "# Benchmark results", "",
        f"Machine: {machine()}.", "",
        f"`python bench/run.py{' --postgres URL' if args.postgres else ''}`: wrk with "
        f"{CONNECTIONS} connections, {args.duration} s per run, {args.rounds} rounds "
        f"alternating the ceiling and the endpoints; figures are medians over the rounds and "
        f"each ratio is to the ceiling of the same round. Waitress with {THREADS} threads for "
        "both. Rate limits are off (RATELIMIT_ENABLED=false) and the open-chat cap is raised, "
        "since `create` opens thousands of chats per user. SQLite servers run from an "
        "environment with only requirements.txt (no PostgreSQL driver), as a SQLite "
        "deployment does.", "",
        "The ceiling is a bare Flask view that reads the JSON body and answers a small JSON "
        "envelope. `send` is `/chat`, `create` is `/create`, `poll` is `/messages` with a "
        "cursor a few messages back (at most 10 returned), `agent list` is "
        "`GET /api/agent/chats?status=open&limit=20`.", "",
        "On SQLite the app serves as `python app.py` does: waitress's thread pool replaced by "
        "the request lane's (`server/lane.py`, one request at a time, the same thread count), and "
        "the write-ahead log checkpointed by a thread of its own. The ceiling runs waitress's "
        "own pool, which serves the bare view faster than one thread does. \"Server CPU\" "
        "is the server process's user and system time over the run's wall time: one core is "
        "1.00.", "",
        "## Targets (SQLite)", "", verdicts(empty, growth), "## Figures", ""]
    report += [table(summary, reference=empty if summary is growth else None)
               for summary in summaries]
    report += ["## Query plans of the agent chat list", ""]
    for name, plan in plans.items():
        report += [f"{name}:", "", "```", plan, "```", ""]
    with open(args.out, "w") as handle:
        handle.write("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    if any(arg == "--waiters" or arg.startswith("--waiters=") for arg in sys.argv[1:]):
        from waiters import main as waiters_main  # bench/waiters.py: waiting long-polls

        waiters_main()
    else:
        main()
