"""Every metric the chart's alerts, dashboards, HPA and KEDA trigger query is one Mailroom
exports, under that name and of a type the query can use.

Renders the chart (everything on, and with KEDA), parses every PromQL expression with a real
PromQL parser (promql-parser) and collects the metric names; starts `mailroom serve all`
against the local stack (.ci/stack.sh must have been sourced and the stack be up), scrapes each
service's metrics port (and, for the metrics only a TLS-serving process exports, a second run
of `mailroom serve identity` with a throwaway gRPC certificate), and compares. Prints what is queried and where, and fails on any name
that is not exported (kube-state-metrics' `kube_*`, which the chart's alerts also query, are
named and exempt).

Every alert must also be actionable: a `severity` label (critical, warning or info), `summary`
and `description` annotations, and `runbook_url` = <prometheusRule.runbookBaseUrl>/<alert>.md
with that runbook in docs/runbooks/ (and no runbook there without its alert).
"""
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import helm_python as helm
import promql_parser
import yaml

CHART = "charts/mailroom"
SECRETS = {
    "databaseUrl": "postgres://x@db:5432/m",
    "signingKey": "k",
    "sealingKeys": "k1:YQ==",
    "webSessionKeys": "w1:YQ==",
    "mailboxesClientSecret": "a",
    "syncClientSecret": "b",
    "invitationsClientSecret": "c",
}
RUNBOOKS = "docs/runbooks"
DEFAULT_RUNBOOK_BASE = "https://github.com/mailroom/mailroom/blob/main/docs/runbooks"
SEVERITIES = {"critical", "warning", "info"}
# Queried by alerts but exported by kube-state-metrics, not by Mailroom.
EXTERNAL_PREFIXES = ("kube_",)
METRICS_PORTS = [9051, 9052, 9053, 9054, 9055, 9056]  # identity, access, mailboxes, sync, invitations, web


def rendered(values):
    chart = helm.Chart.load(CHART)
    out = []
    for path, text in chart.render(values, name="mailroom", namespace="mailroom", is_install=True).items():
        if path.endswith(".yaml"):
            out += [d for d in yaml.safe_load_all(text) if d]
    return out


def names_in(node, found):
    """Metric names of every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            found.add(node.name)
        return
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names_in(child, found)
    for child in getattr(node, "args", None) or []:
        names_in(child, found)


queries = []  # (where, promql)
alerts = {}  # alert name -> [rule]
metric_refs = []  # (where, name) from HPA metric objects
for values in (
    {"secrets": SECRETS, "prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}},
    {"secrets": SECRETS, "keda": {"enabled": True}},
):
    for doc in rendered(values):
        kind = doc["kind"]
        if kind == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    queries.append((f"alert {rule['alert']}", rule["expr"]))
                    alerts.setdefault(rule["alert"], []).append(rule)
        elif kind == "ConfigMap" and "grafana_dashboard" in doc["metadata"].get("labels", {}):
            for key, text in doc["data"].items():
                for panel in json.loads(text)["panels"]:
                    for target in panel["targets"]:
                        queries.append((f"dashboard {key}: {panel['title']}", target["expr"].replace("$namespace", "mailroom")))
        elif kind == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if trigger["type"] == "prometheus":
                    queries.append(("KEDA prometheus trigger", trigger["metadata"]["query"]))
        elif kind == "HorizontalPodAutoscaler":
            for metric in doc["spec"]["metrics"]:
                body = metric.get("external") or metric.get("pods") or {}
                metric_refs.append((f"HPA {metric['type']} metric", body["metric"]["name"]))

# Every alert actionable: severity, summary, description, and a runbook that exists.
runbook_problems = []
for alert, rules in sorted(alerts.items()):
    for rule in rules:
        labels, notes = rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            runbook_problems.append(f"{alert}: severity {labels.get('severity')!r} is not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key, "").strip():
                runbook_problems.append(f"{alert}: no {key} annotation")
        url = notes.get("runbook_url", "")
        if url and url != f"{DEFAULT_RUNBOOK_BASE}/{alert}.md":
            runbook_problems.append(f"{alert}: runbook_url {url} is not {DEFAULT_RUNBOOK_BASE}/{alert}.md")
    if not os.path.isfile(os.path.join(RUNBOOKS, f"{alert}.md")):
        runbook_problems.append(f"{alert}: no runbook {RUNBOOKS}/{alert}.md")
orphans = sorted(f for f in os.listdir(RUNBOOKS) if f.endswith(".md") and f != "README.md" and f[:-3] not in alerts) if os.path.isdir(RUNBOOKS) else []
runbook_problems += [f"{RUNBOOKS}/{f}: no alert of that name" for f in orphans]
for problem in runbook_problems:
    print(f"FAIL {problem}")
print(f"alerts: {len(alerts)} with severity, summary, description and a runbook: {len(alerts) - len({p.split(':')[0] for p in runbook_problems})} of {len(alerts)}")
if runbook_problems:
    sys.exit(1)

queried = {}  # name -> [where]
for where, query in queries:
    found = set()
    names_in(promql_parser.parse(query), found)
    if not found:
        print(f"FAIL {where}: no metric in `{query}`")
        sys.exit(1)
    for name in found:
        queried.setdefault(name, []).append(where)
for where, name in metric_refs:
    queried.setdefault(name, []).append(where)

# `mailroom serve all` against the local stack.
binary = "target/debug/mailroom"
# Every target, as .ci/test builds: `-p mailroom` alone resolves the dependencies' features
# differently and would compile about a hundred crates again after CI's build.
subprocess.run(["cargo", "build", "-q", "--workspace", "--all-targets"], check=True)
keygen = lambda *a: subprocess.run([binary, "keygen", *a], check=True, capture_output=True, text=True).stdout.strip()  # noqa: E731
env = dict(os.environ)
# A database, topics and consumer groups of its own: `serve all` under the defaults would join
# the demo stack's groups (`mailroom dev`'s), and a process stopped while joining can leave a
# member there that the local broker waits for, and its relays would publish the demo
# database's events to this check's topics.
check_id = f"metrics_check_{os.getpid()}"


def with_database(url, name):
    """`url` naming the database `name` (its query — sslmode and the like — kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


admin_url = with_database(env["DATABASE_URL"], "postgres")
database = f"mailroom_test_{check_id}"
subprocess.run(["psql", "-q", admin_url, "-c", f"DROP DATABASE IF EXISTS {database}", "-c", f"CREATE DATABASE {database}"], check=True)
# Dropped however the check ends (the server is stopped first: `finally` below runs before).
atexit.register(lambda: subprocess.run(["psql", "-q", admin_url, "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False))
env["DATABASE_URL"] = with_database(env["DATABASE_URL"], database)
env["MAILROOM_KAFKA_TOPIC_PREFIX"] = check_id.replace("_", "-")
for service in ["identity", "access", "mailboxes", "sync", "invitations"]:
    env[f"MAILROOM_{service.upper()}__CONSUMER_GROUP"] = f"{check_id}-{service}"
env["MAILROOM_SYNC__WORKER_GROUP"] = f"{check_id}-sync-workers"
env.update({
    "MAILROOM_LISTEN_HOST": "127.0.0.1",
    "MAILROOM_LOG_LEVEL": "warn",
    "MAILROOM_IDENTITY__SIGNING_KEYS": keygen(),
    "MAILROOM_MAILBOXES__SEALING_KEYS": keygen("--sealing", "k1"),
    "MAILROOM_IDENTITY__SERVICE_CLIENTS__MAILBOXES": "metrics-check-a",
    "MAILROOM_MAILBOXES__SERVICE_CLIENT_SECRET": "metrics-check-a",
    "MAILROOM_IDENTITY__SERVICE_CLIENTS__SYNC": "metrics-check-b",
    "MAILROOM_SYNC__SERVICE_CLIENT_SECRET": "metrics-check-b",
    "MAILROOM_IDENTITY__SERVICE_CLIENTS__INVITATIONS": "metrics-check-c",
    "MAILROOM_INVITATIONS__SERVICE_CLIENT_SECRET": "metrics-check-c",
})


def stop(server):
    """SIGTERM, then SIGKILL if the process has not exited within 30 s."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


started = time.monotonic()
server = subprocess.Popen([binary, "serve", "all"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
exported = {}  # name -> type
try:
    deadline = time.monotonic() + 120
    pending = list(METRICS_PORTS)
    while pending and time.monotonic() < deadline:
        if server.poll() is not None:
            err = server.stderr.read()[-2000:]
            print("FAIL `mailroom serve all` exited:", err)
            if "already in use" in err:
                # Which program holds it (a process a test left running, say), for the next look.
                try:
                    sockets = subprocess.run(["ss", "-tanp"], capture_output=True, text=True, check=False).stdout
                except OSError as err:
                    sockets = f"(ss could not run: {err})"
                print("\n".join(line for line in sockets.splitlines() if re.search(r":(5005\d|905\d|8080)\s|could not", line)))
            sys.exit(1)
        for port in list(pending):
            # A metrics port answers from the process's start; `/readyz` says 200 once every
            # service of the process has started (and registered its metrics).
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            pending.remove(port)
            for line in text.splitlines():
                m = re.match(r"# TYPE (\S+) (\S+)", line)
                if m:
                    exported[m.group(1)] = m.group(2)
        time.sleep(0.5)
    if pending:
        print(f"FAIL metrics ports {pending} did not answer ready")
        sys.exit(1)
    # Some series appear only after the first background round: the dependency probes set
    # `mailroom_dependency_up` once they have run, which on a loaded machine can be seconds
    # after the ports answer. Every port is scraped again until it shows up (at most 30 s).
    settle = time.monotonic() + 30
    while "mailroom_dependency_up" not in exported and time.monotonic() < settle and server.poll() is None:
        time.sleep(0.5)
        for port in METRICS_PORTS:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            for line in text.splitlines():
                m = re.match(r"# TYPE (\S+) (\S+)", line)
                if m:
                    exported[m.group(1)] = m.group(2)
    print(f"`mailroom serve all` served metrics on {len(METRICS_PORTS)} ports after {time.monotonic() - started:.1f} s; {len(exported)} metrics exported")
finally:
    stop(server)

# Exported only once the process serves gRPC over TLS: a second run, identity alone, with a
# throwaway self-signed certificate, scraped the same way.
TLS_ONLY = {"mailroom_tls_cert_expiry_timestamp_seconds"}
if TLS_ONLY & set(queried) - set(exported):
    import tempfile
    tmp = tempfile.mkdtemp(prefix="check-metrics-tls-")
    cert, key = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    tls_env = dict(env, MAILROOM_GRPC_TLS__CERT_FILE=cert, MAILROOM_GRPC_TLS__KEY_FILE=key, MAILROOM_GRPC_TLS__CA_FILE=cert)
    server = subprocess.Popen([binary, "serve", "identity"], env=tls_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, found = time.monotonic() + 60, False
        while not found and time.monotonic() < deadline and server.poll() is None:
            try:
                text = urllib.request.urlopen("http://127.0.0.1:9051/metrics", timeout=2).read().decode()
                for line in text.splitlines():
                    m = re.match(r"# TYPE (\S+) (\S+)", line)
                    if m and m.group(1) in TLS_ONLY:
                        exported[m.group(1)] = m.group(2)
                found = TLS_ONLY <= set(exported)
            except OSError:
                pass
            time.sleep(0.5)
        print(f"`mailroom serve identity` with gRPC TLS: {sorted(TLS_ONLY & set(exported))} exported")
    finally:
        stop(server)

failed = 0
for name, where in sorted(queried.items()):
    if name.startswith(EXTERNAL_PREFIXES):
        print(f"ext  {name} (kube-state-metrics) — {len(where)} use(s): {', '.join(sorted(set(where)))[:160]}")
        continue
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    kind = exported.get(name) or exported.get(base)
    ok = kind is not None and (name == base or kind in ("histogram", "summary"))
    if name.endswith("_bucket"):
        ok = ok and exported.get(base) == "histogram"
    print(f"{'ok  ' if ok else 'FAIL'} {name} ({kind or 'not exported'}) — {len(where)} use(s): {', '.join(sorted(set(where)))[:160]}")
    failed += 0 if ok else 1
print(f"metric names: {len(queried) - failed} of {len(queried)} queried names exported")
sys.exit(1 if failed else 0)
