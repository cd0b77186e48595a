"""Waiting long-polls: what N polls waiting on N chats (and, separately, N idle keep-alive
connections) cost the server, and how soon a send wakes the poll waiting on its chat.

    python bench/run.py --waiters 2000
    python bench/run.py --waiters 2000 --postgres postgresql://postgres@127.0.0.1:5432/bench

One `python app.py` on a SQLite file (run from the requirements.txt-only environment, as
bench/run.py runs it), the same process and settings throughout:

- send throughput and p99 (wrk, 16 connections, into 1,000 chats nobody polls) in three states,
  alternated over the rounds: none waiting, N polls waiting, N idle keep-alive connections;
  the ratios are taken within each round and the report gives their median;
- in the first round, with the N polls waiting: the server's RSS, its CPU over 10 s while
  nothing else happens, and the wake latency of sequential sends, each into a different
  waiting chat: from the send's answer to the answer of that chat's poll.

The N polls come from one thread of this process (`PollClient`: `selectors`, non-blocking
sockets, HTTP/1.1 keep-alive), each connection polling its own chat with `wait` 25 and
polling again as soon as an answer comes. After the measurements of a state, every waiting
poll is woken by a message into its chat (which shows it was waiting) and its connection is
closed, so that the next state starts with none waiting.

With --postgres: two `python app.py` on that database (emptied, or created), N polls waiting
on the second, sends through the first: the wake latency across instances.

Results are printed and written to the section "Waiting long-polls" of bench/results.md (the
rest of the file is kept).
"""
import argparse
import collections
import datetime
import errno
import heapq
import http.client
import json
import math
import os
import re
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, ROOT)

import run  # noqa: E402 (bench/run.py, beside this file)

WAIT = 25  # seconds each poll asks to wait (the API's most)
WRK_CHATS = 1000  # chats wrk sends into: none of them has a poll waiting
CHANNEL_TIMEOUT = 300  # idle connections must outlive a phase: the same in every phase
CPU_WINDOW = 10  # seconds of "nothing happens" for the idle CPU figure
SETTLE = 3  # seconds without any answer taken as "all waiting" when /healthz cannot say
WAKE_TIMEOUT = 5  # a send whose poll has not answered after this long counts as an error

TARGETS = {
    "rss_mb": 120,
    "idle_cores": 0.05,
    "rps_ratio": 0.9,
    "p99_ratio": 1.5,
    "wake_p99_ms": 50,
    "wake_p99_ms_postgres": 100,
}


# --- the server --------------------------------------------------------------------------------

def event_loop_serving():
    """Whether server/serve.py serves waiting polls from an event loop (no thread per waiter)."""
    with open(os.path.join(ROOT, "server/serve.py")) as source:
        return "EventLoop" in source.read()


def server_env(waiters, database_url):
    env = {"DATABASE_URL": database_url, "LONGPOLL_MAX_WAITERS": str(waiters),
           "RATELIMIT_ENABLED": "false", "MAX_OPEN_CHATS": "1000000",
           "CHANNEL_TIMEOUT": str(CHANNEL_TIMEOUT)}
    if not event_loop_serving():
        # A thread per waiting poll, and room for N connections besides them.
        env["WAITRESS_THREADS"] = str(waiters + 16)
        env["CONNECTION_LIMIT"] = str(max(3 * waiters, 2 * waiters + 64))
    return env


def start_server(python, database_url, waiters):
    return run.Server([python, "app.py"], env=server_env(waiters, database_url))


def health(server):
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=30) as answer:
        return json.load(answer)["data"]


def long_polls(server):
    """/healthz's `long_polls` ({"waiting", "capacity", "woken"}), or None when it has none."""
    try:
        return health(server).get("long_polls")
    except (OSError, ValueError):
        return None


def server_log(server):
    """The server's warnings and errors so far: (count, a few distinct lines)."""
    server.log.flush()
    server.log.seek(0)
    lines = server.log.read().decode("utf-8", "replace").splitlines()
    server.log.seek(0, os.SEEK_END)
    bad = [line for line in lines
           if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback|Exception", line)]
    samples = list(dict.fromkeys(re.sub(r"^\S+ \S+ ", "", line)[:200] for line in bad))
    return len(bad), samples[:6]


def stop_server(server, name="server"):
    """SIGTERM, and SIGKILL 10 s later: what went wrong, or None."""
    try:
        server.stop()
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        server.log.close()
        return f"{name} did not exit within 10 s of SIGTERM: killed"
    if server.process.returncode != 0:
        return f"{name} exited with status {server.process.returncode} on SIGTERM"
    return None


# --- HTTP by hand -------------------------------------------------------------------------------

class ProtocolError(Exception):
    pass


def parse_response(buffer):
    """(status, headers, body, rest) of the first whole response in `buffer`, or None while
    it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {head[0][:60]!r}")
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(buffer) < start + length:
            return None
        return status, headers, buffer[start:start + length], buffer[start + length:]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, position = [], start
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(buffer[position:line_end].split(b";")[0], 16)
            position = line_end + 2
            if size == 0:
                if len(buffer) < position + 2:
                    return None
                return status, headers, b"".join(body), buffer[position + 2:]
            if len(buffer) < position + size + 2:
                return None
            body.append(buffer[position:position + size])
            position += size + 2
    raise ProtocolError("an answer with neither Content-Length nor chunked encoding")


class Connection:
    __slots__ = ("index", "sock", "state", "out", "inbuf", "sent_at", "events")

    def __init__(self, index, sock):
        self.index, self.sock = index, sock
        self.state = "connecting"  # then "sending", "waiting", "idle"
        self.out, self.inbuf, self.sent_at, self.events = b"", b"", 0.0, 0


class PollClient:
    """One long-poll per chat, each on its own keep-alive connection, all driven by one thread
    with `selectors`. Each answer is timed on arrival (time.perf_counter) and followed at once
    by the next poll (after 1 s instead when the answer was an error or came back at once
    with nothing: the server did not let it wait)."""

    def __init__(self, port, chats, wait=WAIT, max_connecting=100):
        self.port, self.chats, self.wait = port, chats, wait
        self.max_connecting = max_connecting
        self.selector = selectors.DefaultSelector()
        self.condition = threading.Condition()
        self.repoll = True  # False: answers are no longer followed by another poll
        self.stopping = False
        self.to_open = collections.deque(range(len(chats)))
        self.delayed = []  # heap of (monotonic due time, chat index)
        self.connections = {}  # chat index -> Connection
        self.connecting = 0
        self.in_flight = 0  # polls sent and not answered yet
        self.answers = 0
        self.with_messages = 0
        self.expired = 0  # answered empty after about `wait`: the wait ran out
        self.early_empty = 0  # answered empty long before `wait`: the server did not wait
        self.errors = collections.Counter()
        self.last_answer = time.monotonic()
        self.message_times = [[] for _ in chats]  # perf_counter of each answer with messages
        self.thread = threading.Thread(target=self._loop, name="poll-client", daemon=True)

    # the main thread's side

    def start(self):
        self.thread.start()

    def all_sent(self):
        return not self.to_open and self.connecting == 0 and self.in_flight == len(self.chats)

    def wait_for_message(self, index, since, timeout):
        """When the first answer with messages for chat `index` arrived at or after `since`
        (perf_counter), waiting up to `timeout` seconds for it; None if none did."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for arrived in self.message_times[index]:
                    if arrived >= since:
                        return arrived
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(remaining)

    def close(self):
        self.stopping = True
        self.thread.join(10)

    # the loop's thread

    def _loop(self):
        while not self.stopping:
            self._due()
            for key, mask in self.selector.select(0.05):
                connection = key.data
                try:
                    if connection.state == "connecting":
                        self._connected(connection)
                    elif mask & selectors.EVENT_WRITE:
                        self._flush(connection)
                    elif mask & selectors.EVENT_READ:
                        self._receive(connection)
                except (OSError, ProtocolError, ValueError) as error:
                    self._failed(connection, describe(error))
        for connection in list(self.connections.values()):
            self._close(connection)
        self.selector.close()

    def _due(self):
        now = time.monotonic()
        while self.delayed and self.delayed[0][0] <= now:
            _, index = heapq.heappop(self.delayed)
            if not self.repoll:
                continue
            connection = self.connections.get(index)
            if connection is None:
                self._connect(index)
            elif connection.state == "idle":
                self._send_poll(connection)
        while self.to_open and self.connecting < self.max_connecting:
            self._connect(self.to_open.popleft())

    def _later(self, index, seconds=1.0):
        heapq.heappush(self.delayed, (time.monotonic() + seconds, index))

    def _watch(self, connection, events):
        if connection.events == events:
            return
        if connection.events:
            self.selector.modify(connection.sock, events, connection)
        else:
            self.selector.register(connection.sock, events, connection)
        connection.events = events

    def _connect(self, index):
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as error:
            self.errors[f"socket(): {describe(error)}"] += 1
            self._later(index)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.errors[f"connect: {errno.errorcode.get(code, code)}"] += 1
            self._later(index)
            return
        connection = Connection(index, sock)
        self.connections[index] = connection
        self.connecting += 1
        self._watch(connection, selectors.EVENT_WRITE)

    def _connected(self, connection):
        self.connecting -= 1
        connection.state = "idle"
        code = connection.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._failed(connection, f"connect: {errno.errorcode.get(code, code)}")
        elif self.repoll:
            self._send_poll(connection)
        else:
            self._watch(connection, selectors.EVENT_READ)

    def _request(self, chat):
        body = json.dumps({"data": {"chat_id": chat["chat_id"], "email": chat["email"],
                                    "after": chat["after"], "wait": self.wait}}).encode()
        return (f"POST /api/client/live/messages HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Authorization: Bearer {chat['token']}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def _send_poll(self, connection):
        connection.out = self._request(self.chats[connection.index])
        connection.inbuf = b""
        connection.state = "sending"
        connection.sent_at = time.monotonic()
        self.in_flight += 1
        self._flush(connection)

    def _flush(self, connection):
        try:
            sent = connection.sock.send(connection.out)
        except BlockingIOError:
            sent = 0
        connection.out = connection.out[sent:]
        if connection.out:
            self._watch(connection, selectors.EVENT_WRITE)
        else:
            connection.state = "waiting"
            self._watch(connection, selectors.EVENT_READ)

    def _receive(self, connection):
        try:
            data = connection.sock.recv(65536)
        except BlockingIOError:
            return
        if not data:
            where = "while its poll waited" if connection.state == "waiting" else \
                "after an answer, before the next poll"
            self._failed(connection, f"connection closed by the server {where}")
            return
        if connection.state != "waiting":
            raise ProtocolError("bytes from the server with no poll asked")
        connection.inbuf += data
        parsed = parse_response(connection.inbuf)
        if parsed is None:
            return
        arrived = time.perf_counter()
        status, headers, body, rest = parsed
        if rest:
            raise ProtocolError("more bytes than one answer")
        self._answered(connection, arrived, status, headers, body)

    def _answered(self, connection, arrived, status, headers, body):
        self.in_flight -= 1
        self.answers += 1
        self.last_answer = time.monotonic()
        connection.state, connection.inbuf = "idle", b""
        index, delay = connection.index, 0.0
        if status != 200:
            try:
                code = json.loads(body)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = ""
            self.errors[f"poll answered HTTP {status} {code}".strip()] += 1
            delay = 1.0
        else:
            data = json.loads(body)["data"]
            self.chats[index]["after"] = data["next_after"]
            if data["messages"]:
                self.with_messages += 1
                with self.condition:
                    self.message_times[index].append(arrived)
                    self.condition.notify_all()
            elif time.monotonic() - connection.sent_at < self.wait - 2:
                self.early_empty += 1
                delay = 1.0
            else:
                self.expired += 1
        if headers.get("connection", "").lower() == "close":
            self._close(connection)
            if self.repoll:
                self._later(index, delay)
            return
        if not self.repoll:
            return
        if delay:
            self._later(index, delay)
        else:
            self._send_poll(connection)

    def _failed(self, connection, why):
        if connection.state in ("sending", "waiting"):
            self.in_flight -= 1
        elif connection.state == "connecting":
            self.connecting -= 1
        if "closed by the server" not in why:
            why += {"connecting": " while connecting", "sending": " while sending its poll",
                    "waiting": " while its poll waited", "idle": " between polls"}[
                connection.state]
        self.errors[why] += 1
        self._close(connection)
        if self.repoll and not self.stopping:
            self._later(connection.index)

    def _close(self, connection):
        if connection.events:
            self.selector.unregister(connection.sock)
            connection.events = 0
        connection.sock.close()
        if self.connections.get(connection.index) is connection:
            del self.connections[connection.index]


def describe(error):
    if isinstance(error, OSError) and error.errno:
        return f"socket error {errno.errorcode.get(error.errno, error.errno)}"
    return f"{type(error).__name__}: {error}"


class Sender:
    """Sends messages as customers, one at a time, over one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, chat, text):
        """(status, perf_counter when the whole answer was read); status 0 on a socket error."""
        body = json.dumps({"data": {"chat_id": chat["chat_id"], "email": chat["email"],
                                    "message": text}})
        headers = {"Authorization": f"Bearer {chat['token']}",
                   "Content-Type": "application/json"}
        try:
            self.connection.request("POST", "/api/client/live/chat", body, headers)
            answer = self.connection.getresponse()
            answer.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return 0, time.perf_counter()
        return answer.status, time.perf_counter()

    def close(self):
        self.connection.close()


# --- the measurements ------------------------------------------------------------------------

def raise_open_files():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def chat_list(credentials):
    """Each seeded chat with its customer's email and token, and the cursor past its messages."""
    per_chat = credentials["messages_per_chat"]
    return [{"chat_id": chat["chat_id"],
             "email": credentials["users"][chat["user"]]["email"],
             "token": credentials["users"][chat["user"]]["token"],
             "after": per_chat} for chat in credentials["chats"]]


def send_script(chats, directory):
    bodies = [json.dumps({"data": {"chat_id": chat["chat_id"], "email": chat["email"],
                                   "message": "Where can I find my subscription URL?"}})
              for chat in chats]
    path = os.path.join(directory, "send_unpolled.lua")
    with open(path, "w") as handle:
        handle.write(run.lua_script("POST", ["/api/client/live/chat"], bodies,
                                    [chat["token"] for chat in chats]))
    return path


def start_polls(server, chats, timeout=120):
    """N polls started and confirmed waiting: by /healthz's `long_polls.waiting` when it
    has it, else by SETTLE seconds without any answer once all are sent."""
    client = PollClient(server.port, chats)
    started = time.monotonic()
    client.start()
    sent_at = None
    while time.monotonic() - started < timeout:
        time.sleep(0.1)
        if not client.all_sent():
            sent_at = None
            continue
        sent_at = sent_at or time.monotonic()
        figures = long_polls(server)
        if figures is not None and "waiting" in figures:
            if figures["waiting"] >= len(chats):
                return client, {"how": "healthz", "seconds": time.monotonic() - started,
                                "capacity": figures.get("capacity")}
        elif time.monotonic() - max(sent_at, client.last_answer) >= SETTLE:
            return client, {"how": "settle", "seconds": time.monotonic() - started - SETTLE,
                            "capacity": None}
    figures = long_polls(server) or {}
    return client, {"how": "timeout", "seconds": time.monotonic() - started,
                    "capacity": figures.get("capacity"), "waiting": figures.get("waiting"),
                    "client_in_flight": client.in_flight}


def idle_cpu(server, client, seconds=CPU_WINDOW):
    """Cores the server used over `seconds` while the polls wait, and how many poll answers
    came meanwhile (0: nothing happened)."""
    answers, cpu, started = client.answers, server.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    cores = (server.cpu_seconds() - cpu) / (time.monotonic() - started)
    return cores, client.answers - answers


def wake_latency(sender, client, chats, indexes):
    """Sequential sends, each into a chat whose poll waits: milliseconds from the send's
    answer to the poll's (may be negative: the poll answered first)."""
    latencies, errors = [], collections.Counter()
    for number, index in enumerate(indexes):
        since = time.perf_counter()
        status, acknowledged = sender.send(chats[index], f"wake-up call {number}")
        if status != 200:
            errors[f"send answered HTTP {status}" if status else "send: socket error"] += 1
            continue
        woke = client.wait_for_message(index, since, WAKE_TIMEOUT)
        if woke is None:
            errors[f"poll not answered within {WAKE_TIMEOUT} s of its send"] += 1
            continue
        latencies.append((woke - acknowledged) * 1000)
    return latencies, errors


def drain(sender, client, chats):
    """Wake every waiting poll with a message into its chat, follow none with another poll,
    and close the connections: the server is left with none waiting."""
    client.repoll = False
    waiting, woken_before = client.in_flight, client.with_messages
    errors = collections.Counter()
    for index, chat in enumerate(chats):
        if index in client.connections:
            status, _ = sender.send(chat, "draining")
            if status != 200:
                errors[f"drain send answered HTTP {status}"] += 1
    deadline = time.monotonic() + 30
    while client.in_flight > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if client.in_flight:
        errors[f"drain: {client.in_flight} polls still unanswered 30 s after their message"] \
            += client.in_flight
    client.close()
    return {"waiting": waiting, "woken": client.with_messages - woken_before}, errors


def open_idle(port, count):
    """`count` keep-alive connections, each having asked GET /healthz once, left open."""
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sockets, errors = [], collections.Counter()
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as error:
            errors[f"idle connect: {describe(error)}"] += 1
            continue
        try:
            sock.sendall(request)
            buffer, parsed = b"", None
            while parsed is None:
                data = sock.recv(65536)
                if not data:
                    raise ProtocolError("closed before its answer")
                buffer += data
                parsed = parse_response(buffer)
            if parsed[0] != 200:
                errors[f"idle connection's /healthz answered HTTP {parsed[0]}"] += 1
            sockets.append(sock)
        except (OSError, ProtocolError, ValueError) as error:
            errors[f"idle connection: {describe(error)}"] += 1
            sock.close()
    return sockets, errors


def close_idle(sockets):
    """Close the idle connections; how many the server had closed already."""
    closed = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            if not sock.recv(1):
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return closed


def percentile(values, share):
    """Nearest-rank percentile of `values` clamped at 0 (None when there are none)."""
    if not values:
        return None
    ordered = sorted(max(0.0, value) for value in values)
    return ordered[max(0, math.ceil(share / 100 * len(ordered)) - 1)]


def wake_figures(latencies, errors, sends):
    return {"sends": sends, "answered": len(latencies),
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else None,
            "min": min(latencies) if latencies else None,
            "negative": sum(1 for value in latencies if value <= 0),
            "errors": dict(errors)}


def wrk_errors(figures):
    return figures["non_2xx"] + figures["errors"]


def bench_sqlite(python, workdir, args, wake_sends):
    n = args.waiters
    print(f"SQLite: seeding {n + WRK_CHATS} customers with one open chat each", flush=True)
    url = f"sqlite:///{workdir}/waiters.db"
    chats = chat_list(run.seed(url, n + WRK_CHATS, n + WRK_CHATS, n + WRK_CHATS))
    polled, unpolled = chats[:n], chats[n:]
    script = send_script(unpolled, workdir)
    result = {"errors": collections.Counter(), "rounds": [], "settings": server_env(n, url)}
    result["settings"].pop("DATABASE_URL")
    server = start_server(python, url, n)
    stop_sampler = threading.Event()
    sampler = threading.Thread(target=run.sample_rss, args=([server], stop_sampler),
                               daemon=True)
    sampler.start()
    sender = Sender(server.port)
    try:
        run.wrk(server.url, script, 2)  # warm-up, not counted
        result["rss_before"] = server.rss_mb()
        result["cpu_none"], _ = idle_cpu(server, PollClient(server.port, []), 5)
        for number in range(args.rounds):
            row = {"none": run.wrk(server.url, script, args.duration)}
            print(f"  round {number + 1}: none waiting {row['none']['rps']:.0f}/s", flush=True)

            client, ready = start_polls(server, polled)
            row["ready"] = ready
            print(f"  round {number + 1}: {n} polls {ready['how']} after "
                  f"{ready['seconds']:.1f} s", flush=True)
            if ready["how"] == "timeout":
                result["errors"][f"{n} polls not all waiting after "
                                 f"{ready['seconds']:.0f} s"] += 1
            if number == 0:
                result["ready"] = ready
                result["rss_waiting"] = server.rss_mb()
                result["cpu_waiting"], result["answers_in_cpu_window"] = idle_cpu(server,
                                                                                   client)
                print(f"  {n} waiting: RSS {result['rss_waiting']:.1f} MB, CPU "
                      f"{result['cpu_waiting']:.3f} cores over {CPU_WINDOW} s", flush=True)
                latencies, errors = wake_latency(sender, client, polled, range(wake_sends))
                result["wake"] = wake_figures(latencies, errors, wake_sends)
                result["errors"].update(errors)
                print(f"  wake latency: p50 {result['wake']['p50']} ms, p99 "
                      f"{result['wake']['p99']} ms", flush=True)
            answers = client.answers
            row["waiters"] = run.wrk(server.url, script, args.duration)
            row["waiters"]["polls_answered"] = client.answers - answers
            row["waiters"]["rss"] = server.rss_mb()
            print(f"  round {number + 1}: {n} waiting {row['waiters']['rps']:.0f}/s", flush=True)
            row["drain"], errors = drain(sender, client, polled)
            result["errors"].update(errors)
            result["errors"].update(client.errors)
            row["early_empty"] = client.early_empty
            if client.early_empty:
                result["errors"]["polls answered at once, empty (the server did not let "
                                 "them wait)"] += client.early_empty

            sockets, errors = open_idle(server.port, n)
            result["errors"].update(errors)
            row["idle_open"] = len(sockets)
            if number == 0:
                result["rss_idle"] = server.rss_mb()
            row["idle"] = run.wrk(server.url, script, args.duration)
            closed = close_idle(sockets)
            if closed:
                result["errors"]["idle connections closed by the server"] += closed
            print(f"  round {number + 1}: {len(sockets)} idle {row['idle']['rps']:.0f}/s",
                  flush=True)
            for state in ("none", "waiters", "idle"):
                if wrk_errors(row[state]):
                    result["errors"][f"wrk non-2xx or socket errors ({state})"] += \
                        wrk_errors(row[state])
            result["rounds"].append(row)
        result["log"] = server_log(server)
    finally:
        sender.close()
        stop_sampler.set()
        sampler.join()
        result["peak_rss"] = server.peak_rss_mb
        trouble = stop_server(server)
        if trouble:
            result["errors"][trouble] += 1
    rounds = result["rounds"]
    for state in ("waiters", "idle"):
        result[f"{state}_rps_ratio"] = statistics.median(
            row[state]["rps"] / row["none"]["rps"] for row in rounds)
        result[f"{state}_p99_ratio"] = statistics.median(
            row[state]["p99"] / row["none"]["p99"] for row in rounds)
    return result


def bench_postgres(url, n, wake_sends):
    print(f"PostgreSQL: two instances, {n} polls waiting on the second, sends through the "
          "first", flush=True)
    run.reset_postgres(url)
    chats = chat_list(run.seed(url, n, n, n))
    result = {"errors": collections.Counter()}
    one = start_server(sys.executable, url, n)
    two = start_server(sys.executable, url, n)
    sender = Sender(one.port)
    client = None
    try:
        client, ready = start_polls(two, chats)
        result["ready"] = ready
        print(f"  {n} polls {ready['how']} after {ready['seconds']:.1f} s", flush=True)
        if ready["how"] == "timeout":
            result["errors"][f"{n} polls not all waiting after {ready['seconds']:.0f} s"] += 1
        result["rss_waiting"] = two.rss_mb()
        result["cpu_waiting"], result["answers_in_cpu_window"] = idle_cpu(two, client, 5)
        result["cpu_sender_idle"], _ = idle_cpu(one, client, 2)
        latencies, errors = wake_latency(sender, client, chats, range(wake_sends))
        result["wake"] = wake_figures(latencies, errors, wake_sends)
        result["errors"].update(errors)
        print(f"  wake latency across instances: p50 {result['wake']['p50']} ms, p99 "
              f"{result['wake']['p99']} ms", flush=True)
        result["drain"], errors = drain(sender, client, chats)  # sent through the first
        result["errors"].update(errors)
        result["errors"].update(client.errors)
        if client.early_empty:
            result["errors"]["polls answered at once, empty (the server did not let them "
                             "wait)"] += client.early_empty
        result["log"] = [server_log(one), server_log(two)]
    finally:
        sender.close()
        if client is not None:
            client.close()
        for name, server in [("instance 1", one), ("instance 2", two)]:
            trouble = stop_server(server, name)
            if trouble:
                result["errors"][trouble] += 1
    return result


# --- the report --------------------------------------------------------------------------------

def verdict(ok):
    return "met" if ok else "**NOT met**"


def ms(value):
    return "-" if value is None else f"{value:.1f}"


def report(args, sqlite, postgres, seconds, wake_sends):
    n = args.waiters
    targets = TARGETS
    rounds = sqlite["rounds"]
    median = statistics.median
    none_rps = median(row["none"]["rps"] for row in rounds)
    none_p99 = median(row["none"]["p99"] for row in rounds)
    wake = sqlite["wake"]
    errors = collections.Counter(sqlite["errors"])
    if postgres:
        errors.update(postgres["errors"])
    total_errors = sum(errors.values())
    serving = "event loop (server/serve.py has `EventLoop`)" if event_loop_serving() else \
        "a waitress thread per waiting poll"
    settings = " ".join(f"{name}={value}" for name, value in sqlite["settings"].items())
    lines = [
        f"## Waiting long-polls (`--waiters {n}`)", "",
        f"Machine: {run.machine()}.", "",
        f"`python bench/run.py --waiters {n}{' --postgres URL' if postgres else ''}`, run "
        f"{datetime.date.today().isoformat()} in {seconds / 60:.1f} min; serving code: "
        f"{serving}. One `python app.py` on a SQLite file for every figure but the last, "
        f"with `{settings}` (CHANNEL_TIMEOUT raised so that idle connections outlive a phase; "
        "the same settings in every phase). "
        f"{n} polls (`wait` {WAIT}, one per chat, each customer one chat) come from one "
        "thread with non-blocking keep-alive sockets and poll again at once on every answer. "
        f"Sends: wrk, {run.CONNECTIONS} connections, {args.duration} s, into {WRK_CHATS} "
        f"other chats (nobody polls them), {args.rounds} rounds alternating none waiting, "
        f"{n} polls waiting and {n} idle keep-alive connections (each asked GET /healthz "
        "once); ratios are taken within a round, the median over the rounds is given. "
        f"RSS, idle CPU and wake latency come from round 1 with the {n} polls waiting: idle "
        f"CPU is the server's user+system time over {CPU_WINDOW} s with nothing sent; wake "
        f"latency is, over {wake_sends} sequential sends into different waiting chats, the "
        "time from the send's answer to the arrival of that chat's poll answer (values at or "
        "below 0 count as 0 in the percentiles). After each waiting phase every poll is woken "
        "by a message and its connection closed.", "",
        "| figure | measured | target | |", "| --- | ---: | ---: | --- |"]

    def figure(name, measured, target, ok=None):
        lines.append(f"| {name} | {measured} | {target} | "
                     f"{'' if ok is None else verdict(ok)} |")

    def ratio(state, key, unit):
        value = sqlite[f"{state}_{key}_ratio"]
        mine = median(row[state][key] for row in rounds)
        digits, base = (0, none_rps) if key == "rps" else (1, none_p99)
        return f"{value:.2f} ({mine:.{digits}f} / {base:.{digits}f}{unit})"

    figure(f"RSS, {n} polls waiting",
           f"{sqlite['rss_waiting']:.1f} MB (none: {sqlite['rss_before']:.1f}; {n} idle "
           f"sockets: {sqlite['rss_idle']:.1f}; peak {sqlite['peak_rss']:.1f})",
           f"≤ {targets['rss_mb']} MB", sqlite["rss_waiting"] <= targets["rss_mb"])
    figure(f"server CPU over {CPU_WINDOW} s, {n} waiting, nothing sent",
           f"{sqlite['cpu_waiting']:.3f} cores (none connected: {sqlite['cpu_none']:.3f})",
           f"≤ {targets['idle_cores']}", sqlite["cpu_waiting"] <= targets["idle_cores"])
    figure(f"send req/s, {n} waiting ÷ none", ratio("waiters", "rps", ""),
           f"≥ {targets['rps_ratio']}", sqlite["waiters_rps_ratio"] >= targets["rps_ratio"])
    figure(f"send p99, {n} waiting ÷ none", ratio("waiters", "p99", " ms"),
           f"≤ {targets['p99_ratio']}", sqlite["waiters_p99_ratio"] <= targets["p99_ratio"])
    figure(f"send req/s, {n} idle sockets ÷ none", ratio("idle", "rps", ""),
           f"≥ {targets['rps_ratio']}", sqlite["idle_rps_ratio"] >= targets["rps_ratio"])
    figure(f"send p99, {n} idle sockets ÷ none", ratio("idle", "p99", " ms"), "(none)")
    for name, figures, limit in [
            ("wake latency, one process", wake, targets["wake_p99_ms"]),
            ("wake latency, two instances on PostgreSQL", postgres and postgres["wake"],
             targets["wake_p99_ms_postgres"])]:
        if not figures:
            figure(name, "not run (no --postgres)", f"p99 ≤ {limit} ms")
            continue
        figure(f"{name}: p50 / p99 / max",
               f"{ms(figures['p50'])} / {ms(figures['p99'])} / {ms(figures['max'])} ms "
               f"({figures['answered']} of {figures['sends']} sends)", f"p99 ≤ {limit} ms",
               figures["p99"] is not None and figures["p99"] <= limit)
    figure("errors", total_errors, 0, total_errors == 0)
    lines.append("")

    lines += ["| round | none: req/s, p99 ms | waiting: req/s, p99 ms, polls answered | "
              "idle sockets: req/s, p99 ms | all waiting after |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for number, row in enumerate(rounds, 1):
        lines.append(
            f"| {number} | {row['none']['rps']:.0f}, {row['none']['p99']:.1f} | "
            f"{row['waiters']['rps']:.0f}, {row['waiters']['p99']:.1f}, "
            f"{row['waiters']['polls_answered']} | {row['idle']['rps']:.0f}, "
            f"{row['idle']['p99']:.1f} ({row['idle_open']} open) | "
            f"{row['ready']['seconds']:.1f} s ({row['ready']['how']}) |")
    lines.append("")

    ready = sqlite["ready"]
    notes = [
        f"All {n} polls waiting: confirmed by "
        + {"healthz": "/healthz `long_polls.waiting`",
           "settle": f"no answer for {SETTLE} s (this /healthz has no `long_polls`)",
           "timeout": "nothing: NOT all waiting before the timeout"}[ready["how"]]
        + f", {ready['seconds']:.1f} s after the first connect"
        + (f" (capacity {ready['capacity']})" if ready.get("capacity") is not None else "")
        + ".",
        f"Poll answers during the idle-CPU window: {sqlite['answers_in_cpu_window']} (0: "
        "nothing happened).",
        f"Wake latency, one process: min {ms(wake['min'])} ms, {wake['negative']} of "
        f"{wake['answered']} at or below 0.",
        f"RSS with none is taken after a warm-up wrk run, before any poll; with {n} idle "
        f"sockets, after round 1's waiting phase in the same process (memory Python does not "
        f"give back is in it); peak is the highest of samples every 0.2 s over the run.",
    ]
    drains = [row["drain"] for row in rounds]
    notes.append("Polls woken when each waiting phase ended: " + ", ".join(
        f"{d['woken']} of {d['waiting']}" for d in drains) + ".")
    if postgres:
        cross = postgres["wake"]
        notes.append(
            f"PostgreSQL: {n} polls waiting on instance 2 after "
            f"{postgres['ready']['seconds']:.1f} s ({postgres['ready']['how']}); its RSS "
            f"{postgres['rss_waiting']:.1f} MB, its CPU {postgres['cpu_waiting']:.3f} cores "
            f"over 5 s with nothing sent ({postgres['answers_in_cpu_window']} answers "
            f"meanwhile), instance 1's {postgres['cpu_sender_idle']:.3f}; wake latency min "
            f"{ms(cross['min'])} ms; at the end, {postgres['drain']['woken']} of "
            f"{postgres['drain']['waiting']} waiting polls woken by a send through instance 1.")
    for name, counts in [("SQLite", sqlite["errors"]),
                         ("PostgreSQL", postgres["errors"] if postgres else {})]:
        if counts:
            notes.append(f"Errors, {name}: " + "; ".join(
                f"{why}: {count}" for why, count in collections.Counter(counts).most_common())
                + ".")
    logs = [("SQLite server", sqlite.get("log"))]
    if postgres:
        logs += [(f"PostgreSQL instance {k}", log) for k, log in
                 enumerate(postgres.get("log", []), 1)]
    for name, log in logs:
        if log and log[0]:
            notes.append(f"{name} logged {log[0]} warning/error line(s), e.g. "
                         + " | ".join(f"`{line}`" for line in log[1][:3]) + ".")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


SECTION = re.compile(r"^## Waiting long-polls \(`--waiters[^\n]*\n.*?(?=^## |\Z)", re.M | re.S)


def write_section(path, section):
    """Put `section` in place of an earlier one of its kind, or after the rest."""
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        text = ""
    if SECTION.search(text):
        text = SECTION.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    with open(path, "w") as handle:
        handle.write(text.rstrip("\n") + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/run.py --waiters N",
        description="What waiting long-polls and idle connections cost the server.")
    parser.add_argument("--waiters", type=int, required=True, metavar="N",
                        help="polls waiting at once, and idle connections (1 to 10,000)")
    parser.add_argument("--postgres", metavar="URL",
                        help="also the wake latency across two instances on this PostgreSQL "
                             "database (it is emptied, or created)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--wake-sends", type=int, default=200,
                        help="sequential sends for the wake latency (at most N)")
    parser.add_argument("--out", default=os.path.join(BENCH, "results.md"))
    args = parser.parse_args(argv)
    if not 1 <= args.waiters <= 10_000:
        parser.error("--waiters takes 1 to 10,000 (LONGPOLL_MAX_WAITERS's range)")
    if args.rounds < 1:
        parser.error("at least 1 round")
    wake_sends = min(args.wake_sends, args.waiters)
    if wake_sends < 200:
        print(f"note: {wake_sends} wake sends (fewer than 200)", flush=True)

    started = time.monotonic()
    limit = raise_open_files()
    if limit < 2 * args.waiters + 256:
        parser.error(f"this process may open {limit} files; {args.waiters} waiters need more")
    run.ensure_wrk()
    python = run.sqlite_only_python()
    workdir = tempfile.mkdtemp(prefix="supportzen-waiters-")
    try:
        sqlite = bench_sqlite(python, workdir, args, wake_sends)
        postgres = bench_postgres(args.postgres, args.waiters, wake_sends) \
            if args.postgres else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    section = report(args, sqlite, postgres, time.monotonic() - started, wake_sends)
    write_section(args.out, section)
    print()
    print(section)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
