"""Checks the Helm chart, the dev cluster's manifests and the Tiltfile without a cluster.

- `helm lint --strict` (Helm's own Go SDK, via helm-python-sdk) and a render for each value
  set an operator would use: the smallest install, dev, monolith, KEDA, an existing Secret,
  everything on;
- every rendered object validated against Kubernetes' schemas in strict mode
  (kubernetes-validate) for two Kubernetes versions; the Prometheus-operator and KEDA objects,
  which have no schema there, checked here for the fields their operators require;
- what the chart promises: a ServiceAccount, NetworkPolicy, PDB and hardened security
  context per Deployment; sync as scheduler and autoscaled workers; the peers each service is
  given; dashboards that parse, with PromQL that parses;
- deliberately broken value sets are refused, each with a message that says what to fix;
- the Tiltfile runs (starlark, Tilt's functions stubbed).
Prints one line per check and `N passed, N failed` at the end.
"""
import copy
import json
import sys

import helm_python as helm
import kubernetes_validate
import promql_parser
import yaml

CHART = "charts/mailroom"
KUBE_VERSIONS = ("1.30.0", "1.33.0")
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/", "cert-manager.io/")
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def merge(base, extra):
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def render(values):
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    return chart.render(values, name="mailroom", namespace="mailroom", is_install=True)


def lint_problems(values, kube):
    """`helm lint --strict`'s findings: the report is data (it does not raise), so read it."""
    report = helm.lint(CHART, values, strict=True, kube_version=kube)
    return report.get("errors", []) + [m["error"] for m in report.get("messages", []) if m.get("severity", 0) >= 2]


def objects(values):
    out = []
    for path, text in sorted(render(values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append(doc)
    return out


minimal = {
    "secrets": {
        "databaseUrl": "postgres://mailroom:secret@db:5432/mailroom",
        "signingKey": "Ue4mGvf1yX1yq1mKZk8y0+2qHkJ7h4m0m3Jr9w0a1sQ=",
        "sealingKeys": "k1:bWFpbHJvb20tZGV2LXNlYWxpbmcta2V5LTMyYnl0ZXM=",
        "mailboxesClientSecret": "chart-check-mailboxes",
        "syncClientSecret": "chart-check-sync",
        "invitationsClientSecret": "chart-check-invitations",
        "webSessionKeys": "w1:bWFpbHJvb20tY2hhcnQtd2ViLXNlc3Npb24ta2V5MzI=",
    }
}
dev = yaml.safe_load(open("k8s/dev-values.yaml"))
everything = merge(minimal, {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
    "config": {"otlpEndpoint": "http://otel-collector:4317", "trustedProxies": "10.0.0.0/8, fd00::/8"},
    "web": {"enabled": True, "port": 8080, "metricsPort": 9056, "podCidrs": "10.244.0.0/16", "ingress": {"enabled": True, "className": "nginx", "tlsSecretName": "mail-tls"}},
    "services": {"identity": {"settings": {"PASSWORD_HASH_CONCURRENCY": 2}},
                 "sync": {"settings": {"MAX_MESSAGES_PER_ORG": 5000000}}},
})
monolith_monitored = merge(minimal, {"monolith": {"enabled": True}, "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}})
VALUE_SETS = [
    ("minimal install values", minimal),
    ("dev values", dev),
    ("monolith", merge(minimal, {"monolith": {"enabled": True}})),
    ("KEDA", merge(minimal, {"keda": {"enabled": True}})),
    ("existing Secret", {"secrets": {"existingSecret": "mailroom-prod"}}),
    ("everything on", everything),
    ("monolith monitored", monolith_monitored),
]
SERVICES = ["identity", "access", "mailboxes", "invitations", "sync"]


def env_of(deployment):
    return {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def probe_paths(name, container):
    """The services: readiness GET /readyz (it gates traffic), startup and liveness GET /livez
    (a pod waiting on a dependency is never restarted for it), the startup probe's budget short
    (at most 2 min), on the metrics port (kubelet's gRPC probe cannot do TLS); the console: its
    own HTTP probes."""
    get = lambda probe: container.get(probe, {}).get("httpGet", {})  # noqa: E731
    if name == "mailroom-web":
        return get("readinessProbe").get("path") == "/healthz" and get("livenessProbe").get("path") == "/livez" and get("startupProbe")
    metrics = {p["containerPort"] for p in container["ports"]} - {50051, 50052, 50053, 50054, 50055}
    startup = container.get("startupProbe", {})
    return (get("startupProbe").get("path") == "/livez" and get("readinessProbe").get("path") == "/readyz"
            and startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) <= 120
            and get("livenessProbe").get("path") == "/livez"
            and {get(p).get("port") for p in ("startupProbe", "readinessProbe", "livenessProbe")} <= metrics)


def check_crd(label, doc):
    """The fields the Prometheus operator and KEDA need, and the PromQL in them."""
    kind, spec = doc["kind"], doc.get("spec", {})
    name = f"{label}: {kind} {doc['metadata']['name']}"
    if kind == "ServiceMonitor":
        check(f"{name} selects by labels and scrapes a named port",
              spec.get("selector", {}).get("matchLabels") and all(e.get("port") for e in spec.get("endpoints", [])), str(spec))
    elif kind == "PrometheusRule":
        rules = [r for g in spec.get("groups", []) for r in g.get("rules", [])]
        bad = []
        for r in rules:
            if not r.get("alert") or not r.get("expr") or "summary" not in r.get("annotations", {}):
                bad.append(r.get("alert"))
                continue
            try:
                promql_parser.parse(r["expr"])
            except Exception as err:  # noqa: BLE001
                bad.append(f"{r['alert']}: {err}")
        check(f"{name}: {len(rules)} alerts, each with expr, summary and PromQL that parses", rules and not bad, str(bad))
    elif kind == "ScaledObject":
        triggers = {t["type"]: t["metadata"] for t in spec.get("triggers", [])}
        ok = (spec.get("scaleTargetRef", {}).get("name")
              and {"kafka", "prometheus"} <= set(triggers)
              and triggers["kafka"].get("topic") == "mailroom.sync.requests"
              and triggers["kafka"].get("consumerGroup") and triggers["kafka"].get("bootstrapServers")
              and triggers["prometheus"].get("serverAddress") and triggers["prometheus"].get("threshold"))
        try:
            promql_parser.parse(triggers.get("prometheus", {}).get("query", ""))
        except Exception as err:  # noqa: BLE001
            ok = False
        check(f"{name}: scale target, Kafka-lag and Prometheus triggers", ok, str(spec)[:300])
    elif kind == "Certificate" and doc["metadata"]["name"].endswith("-grpc-client"):
        check(f"{name}: a client-only certificate (client auth, no server auth), 90 days renewed 30 days before",
              spec.get("secretName") and spec.get("issuerRef", {}).get("name") and spec.get("commonName")
              and set(spec.get("usages", [])) == {"client auth", "digital signature", "key encipherment"}
              and spec.get("duration") == "2160h" and spec.get("renewBefore") == "720h", str(spec)[:300])
    elif kind == "Certificate":
        check(f"{name}: a Secret, an issuer and DNS names, for servers and clients, 90 days renewed 30 days before",
              spec.get("secretName") and spec.get("issuerRef", {}).get("name") and spec.get("dnsNames")
              and {"server auth", "client auth"} <= set(spec.get("usages", []))
              and spec.get("duration") == "2160h" and spec.get("renewBefore") == "720h", str(spec)[:300])
    else:
        check(f"{name}: a known operator kind", False)


def invalid_objects(label, docs):
    """Checks the operator resources among `docs`; the others' failures of Kubernetes's schemas
    in strict mode, on every version in KUBE_VERSIONS, as readable lines."""
    invalid = []
    for doc in docs:
        if doc["apiVersion"].startswith(CRD_GROUPS):
            check_crd(label, doc)
            continue
        for kube in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, kube, strict=True)
            except Exception as err:  # noqa: BLE001 - any schema failure, or a kind without a schema
                invalid.append(f"{doc['kind']} {doc['metadata']['name']} on {kube}: {str(err)[:200]}")
    return invalid


for label, values in VALUE_SETS:
    for kube in KUBE_VERSIONS:
        try:
            problems = lint_problems(values, kube)
            check(f"helm lint --strict ({label}, Kubernetes {kube})", not problems, str(problems)[:400])
        except helm.HelmError as err:
            check(f"helm lint --strict ({label}, Kubernetes {kube})", False, str(err)[:400])
    try:
        docs = objects(values)
    except helm.HelmError as err:
        check(f"{label}: renders", False, str(err)[:400])
        continue
    invalid = invalid_objects(label, docs)
    check(f"{label}: {len(docs)} objects valid in strict mode on Kubernetes {' and '.join(KUBE_VERSIONS)}", not invalid, "; ".join(invalid))

    kinds = [d["kind"] for d in docs]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    by_kind = lambda k: {d["metadata"]["name"] for d in docs if d["kind"] == k}  # noqa: E731
    monolith = label.startswith("monolith")
    scheme = "https" if values.get("tls", {}).get("grpc", {}).get("enabled") else "http"
    web_on = values.get("web", {}).get("enabled", True)
    expected = {"mailroom-all"} if monolith else {f"mailroom-{n}" for n in ["identity", "access", "mailboxes", "invitations", "sync-scheduler", "sync-worker"]}
    if web_on:
        expected |= {"mailroom-web"}
    check(f"{label}: Deployments {sorted(expected)}", set(deployments) == expected, str(sorted(deployments)))
    check(f"{label}: one Service per API and one headless Service its peers call, same names in monolith mode",
          by_kind("Service") == {f"mailroom-{n}{s}" for n in SERVICES for s in ("", "-peers")} | ({"mailroom-web"} if web_on else set()),
          str(sorted(by_kind("Service"))))
    headless = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-peers")]
    check(f"{label}: the peers' Services are headless (DNS lists every pod, so callers balance)",
          headless and all(d["spec"].get("clusterIP") == "None" for d in headless))
    migrate = {"mailroom-migrate"} if values.get("migrations", {}).get("enabled", True) else set()
    check(f"{label}: a ServiceAccount per Deployment and the migration Job", by_kind("ServiceAccount") == set(deployments) | migrate, str(by_kind("ServiceAccount")))
    if values.get("networkPolicy", {}).get("enabled", True):
        check(f"{label}: a NetworkPolicy per Deployment and the migration Job", by_kind("NetworkPolicy") == set(deployments) | migrate, str(by_kind("NetworkPolicy")))
    if values.get("podDisruptionBudget", {}).get("enabled", True):
        pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
        check(f"{label}: a PodDisruptionBudget per Deployment, maxUnavailable 1 (a drain is never blocked)",
              {d["metadata"]["name"] for d in pdbs} == set(deployments)
              and all(d["spec"].get("maxUnavailable") == 1 and "minAvailable" not in d["spec"] for d in pdbs), str([d["spec"] for d in pdbs])[:300])
    hardened = []
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        sc = c.get("securityContext", {})
        if not (pod["securityContext"].get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                and sc.get("allowPrivilegeEscalation") is False
                and probe_paths(name, c)
                and pod.get("serviceAccountName") == name):
            hardened.append(name)
    check(f"{label}: every Deployment non-root, read-only root, no privilege escalation, HTTP probes (/readyz, /livez on the metrics port; the console its own), a startupProbe, own ServiceAccount", not hardened, str(hardened))
    if migrate:
        unmigrating = [n for n, d in deployments.items() if n != "mailroom-web" and env_of(d).get("MAILROOM_MIGRATE_ON_START", {}).get("value") != "false"]
        check(f"{label}: only the Job migrates (MAILROOM_MIGRATE_ON_START=false in every service pod)", not unmigrating, str(unmigrating))
    if web_on:
        wenv = env_of(deployments["mailroom-web"])
        wpolicy = next((d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mailroom-web"), None)
        if wpolicy:
            # The rule after DNS is the dependencies'; OTLP export, when configured, comes last.
            wports = sorted(p["port"] for p in wpolicy["spec"]["egress"][1].get("ports", []))
            redis_ports = {6379} | ({6380} if "6380" in values.get("secrets", {}).get("redisUrl", "") else set())
            check(f"{label}: the console reaches Redis but not the database or the broker", set(wports) == redis_ports, str(wports))
        check(f"{label}: the console holds no database URL, mailbox sealing key or service credential",
              "secretKeyRef" not in json.dumps(wenv.get("DATABASE_URL", {}))
              and not any("SEALING" in json.dumps(e) or "CLIENT_SECRET" in json.dumps(e) for e in wenv.values()), str(sorted(wenv)))
        check(f"{label}: the console calls the five services' headless Services, seals sessions with a key from the Secret, knows its public URL",
              all(wenv.get(f"MAILROOM_WEB__{n.upper()}_ENDPOINT", {}).get("value", "").startswith(f"{scheme}://mailroom-{n}-peers:") for n in SERVICES)
              and "secretKeyRef" in wenv["MAILROOM_WEB__SESSION_KEYS"]["valueFrom"]
              and wenv["MAILROOM_PUBLIC_URL"]["value"].startswith("http"),
              str(sorted(wenv)))
        linked = [d["metadata"]["name"] for d in deployments.values() if "MAILROOM_PUBLIC_URL" not in env_of(d)]
        check(f"{label}: every service knows the console's public URL (mailed links open it)", not linked, str(linked))
    check(f"{label}: migrations Job and helm test Pod", "Job" in kinds and any(
        d["kind"] == "Pod" and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test" for d in docs), str(kinds))
    operator_secret = next((d["metadata"]["name"] for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-operator")), None)
    if operator_secret:
        mounting = [d["metadata"]["name"] for d in docs if d["kind"] in ("Deployment", "Job", "Pod")
                    and operator_secret in json.dumps(d["spec"])]
        check(f"{label}: the operator's credential is in a Secret no workload refers to", not mounting, str(mounting))
    test_pod = next((d for d in docs if d["kind"] == "Pod"), None)
    if test_pod:
        args = test_pod["spec"]["containers"][0]["args"]
        check(f"{label}: helm test checks every service's health", args[0] == "health" and len(args) == 6, str(args))

    if not monolith:
        worker = deployments["mailroom-sync-worker"]
        wspec = worker["spec"]["template"]["spec"]
        check(f"{label}: sync split into scheduler and worker roles, the worker with a long grace period",
              deployments["mailroom-sync-scheduler"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["serve", "sync", "--role", "scheduler"]
              and wspec["containers"][0]["args"] == ["serve", "sync", "--role", "worker"]
              and wspec["terminationGracePeriodSeconds"] >= 60, str(wspec["containers"][0]["args"]))
        env = env_of(deployments["mailroom-invitations"])
        ienv = env_of(deployments["mailroom-identity"])
        senv = env_of(worker)
        check(f"{label}: peers and credentials: invitations and sync find identity and access, identity knows their credentials",
              env["MAILROOM_INVITATIONS__IDENTITY_ENDPOINT"]["value"] == f"{scheme}://mailroom-identity-peers:50051"
              and env["MAILROOM_INVITATIONS__ACCESS_ENDPOINT"]["value"] == f"{scheme}://mailroom-access-peers:50055"
              and senv["MAILROOM_SYNC__MAILBOXES_ENDPOINT"]["value"] == f"{scheme}://mailroom-mailboxes-peers:50053"
              and all("secretKeyRef" in ienv[f"MAILROOM_IDENTITY__SERVICE_CLIENTS__{c}"]["valueFrom"] for c in ["MAILBOXES", "SYNC", "INVITATIONS"])
              and "secretKeyRef" in env["MAILROOM_INVITATIONS__SERVICE_CLIENT_SECRET"]["valueFrom"],
              str(sorted(env)))
        menv = env_of(deployments["mailroom-mailboxes"])
        policy = lambda e, svc: [e.get(f"MAILROOM_{svc}__MAIL_SERVERS__ALLOWED_{k}", {}).get("value") for k in ("NETWORKS", "HOSTS", "PORTS")]
        check(f"{label}: the registry and the sync dial mail servers under one destination policy",
              policy(menv, "MAILBOXES") == policy(senv, "SYNC") and policy(senv, "SYNC")[2]
              and "MAILROOM_MAILBOXES__ALLOW_LOCAL_SERVERS" not in menv,
              f"{policy(menv, 'MAILBOXES')} vs {policy(senv, 'SYNC')}")
        scaler = [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
        if label == "dev values":
            check(f"{label}: no autoscaler, fixed replicas", not scaler and worker["spec"].get("replicas") == 1)
        else:
            want = "ScaledObject" if label == "KEDA" else "HorizontalPodAutoscaler"
            ok = len(scaler) == 1 and scaler[0]["kind"] == want and "replicas" not in worker["spec"]
            if ok and want == "HorizontalPodAutoscaler":
                spec = scaler[0]["spec"]
                names = sorted(m.get("external", m.get("pods", {})).get("metric", {}).get("name", "") for m in spec["metrics"])
                ok = (names == ["mailroom_events_lag_records", "mailroom_sync_idle_connections", "mailroom_sync_overdue_mailboxes"]
                      and spec["maxReplicas"] <= 8 and spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300)
            check(f"{label}: the sync workers scaled by a {want} on activity, slow to scale down, replicas left to it", ok, str(scaler)[:300])
        policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] != "mailroom-migrate"}
        if policies:
            def callers(target):
                rules = policies[target]["spec"]["ingress"][0].get("from", [])
                return sorted(k.split("serves-")[1] for r in rules for k in r.get("podSelector", {}).get("matchLabels", {}) if "serves-" in k)
            check(f"{label}: only callers reach a service (identity ← the four and the console, mailboxes ← sync and the console, invitations ← the console)",
                  callers("mailroom-identity") == ["access", "invitations", "mailboxes", "sync", "web"]
                  and callers("mailroom-mailboxes") == ["sync", "web"] and callers("mailroom-invitations") == ["web"]
                  and callers("mailroom-access") == ["invitations", "mailboxes", "sync", "web"],
                  str({n: callers(n) for n in policies}))
            egress = policies["mailroom-invitations"]["spec"]["egress"]
            targets = sorted(k.split("serves-")[1] for r in egress for t in r.get("to", []) for k in t.get("podSelector", {}).get("matchLabels", {}) if "serves-" in k)
            check(f"{label}: invitations may call identity and access only (plus its dependencies and SMTP)", targets == ["access", "identity"], str(targets))
    if label == "minimal install values":
        secret = next(d for d in docs if d["kind"] == "Secret")
        check(f"{label}: no empty SMTP login in the Secret (services would try to log in with it)",
              "MAILROOM_SMTP_USERNAME" not in secret["stringData"] and "MAILROOM_SMTP_PASSWORD" not in secret["stringData"], str(sorted(secret["stringData"])))
        check(f"{label}: pods restart when the chart's Secret changes (checksum annotation)",
              all("checksum/secret" in d["spec"]["template"]["metadata"].get("annotations", {}) for d in deployments.values()))
    if monolith:
        egress = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["egress"]
        ports = {p["port"] for r in egress if r.get("to") for p in r["ports"]}
        check(f"{label}: the one pod may call its own services through their Services (other replicas)", {50051, 50053, 50055} <= ports, str(ports))
    if label == "monolith monitored":
        monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
        check(f"{label}: one ServiceMonitor for the five (every port serves the one registry) and the console's, with the labels Prometheus selects on",
              sorted(m["metadata"]["name"] for m in monitors) == ["mailroom-identity", "mailroom-web"]
              and all(m["metadata"]["labels"].get("release") == "kps" for m in monitors), str([m["metadata"] for m in monitors]))
    if label == "KEDA":
        kafka = next(t for d in docs if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"] if t["type"] == "kafka")
        check(f"{label}: KEDA reaches Kafka by a name that resolves from its own namespace",
              kafka["metadata"]["bootstrapServers"] == "kafka.mailroom.svc:9092", kafka["metadata"]["bootstrapServers"])
    if label == "everything on":
        ienv, senv = env_of(deployments["mailroom-identity"]), env_of(deployments["mailroom-sync-worker"])
        check(f"{label}: a service's settings map becomes its MAILROOM_<SERVICE>__ variables",
              ienv.get("MAILROOM_IDENTITY__PASSWORD_HASH_CONCURRENCY", {}).get("value") == "2"
              and senv.get("MAILROOM_SYNC__MAX_MESSAGES_PER_ORG", {}).get("value") == "5000000",
              str(sorted(ienv))[:300])
        venv = env_of(deployments["mailroom-invitations"])
        check(f"{label}: identity and invitations believe x-forwarded-for from config.trustedProxies and the console's pods only",
              all(e.get("MAILROOM_%s__TRUSTED_PROXIES" % s, {}).get("value") == "10.0.0.0/8, fd00::/8, 10.244.0.0/16"
                  for s, e in (("IDENTITY", ienv), ("INVITATIONS", venv))))
        ingress = [d for d in docs if d["kind"] == "Ingress"]
        check(f"{label}: the console's Ingress serves publicUrl's host with its TLS Secret",
              len(ingress) == 1 and ingress[0]["spec"]["rules"][0]["host"] == "mailroom.example.com"
              and ingress[0]["spec"]["tls"][0]["secretName"] == "mail-tls", str(ingress)[:300])
        maps = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        problems = []
        for m in maps:
            for key, text in m["data"].items():
                try:
                    dash = json.loads(text)
                    for p in dash["panels"]:
                        for t in p["targets"]:
                            promql_parser.parse(t["expr"].replace("$namespace", "x"))
                except Exception as err:  # noqa: BLE001
                    problems.append(f"{key}: {err}")
        check(f"{label}: {len(maps)} Grafana dashboards as ConfigMaps, JSON and PromQL that parse", len(maps) == 2 and not problems, str(problems))
        kinds_on = set(kinds)
        check(f"{label}: ServiceMonitors and the PrometheusRule rendered", {"ServiceMonitor", "PrometheusRule"} <= kinds_on, str(kinds_on))

# Issue 25's chart: TLS to everything, extensibility, policy ports from the configuration,
# the migration Job on its own.
def pods_of(docs):
    """Every workload's pod spec by name: the Deployments and the migration Job."""
    return {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "Job")}


def all_env(pod):
    return {e["name"]: e for c in pod["spec"]["containers"] for e in c.get("env", [])}


def mounts(pod):
    return {m["mountPath"]: m["name"] for c in pod["spec"]["containers"] for m in c.get("volumeMounts", [])}


def egress_ports(policy, with_to=None):
    return sorted({p["port"] for r in policy["spec"]["egress"] for p in r.get("ports", [])
                   if with_to is None or bool(r.get("to")) == with_to} - {53})


tls_all = merge(minimal, {
    "secrets": {"databaseUrl": "postgres://mailroom:db-password-x1@db.example.com:5432/mailroom",
                "redisUrl": "rediss://:redis-password-x2@cache.example.com:6380", "kafkaSaslPassword": "kafka-password-x3"},
    "config": {"kafkaBrokers": "b-1.msk.example.com:9096,b-2.msk.example.com:9096", "otlpEndpoint": "https://otel.example.com:4317",
               "kafka": {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "mailroom"}, "properties": {"client.rack": "use1-az1"}}},
    "tls": {"postgres": {"enabled": True, "secretName": "pg-ca", "mode": "verify-full"},
            "redis": {"enabled": True, "secretName": "redis-tls", "clientCert": True},
            "kafka": {"enabled": True, "secretName": "kafka-ca"},
            "grpc": {"enabled": True, "clientAuth": True, "certManager": {"enabled": True, "issuerRef": {"name": "mailroom-ca", "kind": "Issuer"}}},
            "otlp": {"enabled": True, "secretName": "otel-ca"}},
})
spread = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}


def tier_affinity(tier):
    """A node affinity that names `tier`, so each component's is told apart from the others'."""
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "example.com/tier", "operator": "In", "values": [tier]}]}}]}}


def quota(cpu, memory, limit):
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": limit}}


# Per-component resources and affinity in "extended": identity, the sync workers, the console
# and the Job set their own; invitations' resources set to null (so the global ones); access,
# mailboxes and the scheduler keep the chart's resources and take the global affinity.
OWN_RESOURCES = {"identity": quota("110m", "130Mi", "520Mi"), "worker": quota("510m", "520Mi", "2100Mi"),
                 "web": quota("120m", "100Mi", "260Mi"), "migrate": quota("130m", "140Mi", "530Mi"),
                 "global": quota("50m", "64Mi", "300Mi")}
extended = merge(minimal, {
    "resources": OWN_RESOURCES["global"],
    "affinity": tier_affinity("global"),
    "imagePullSecrets": [{"name": "regcred"}],
    "extraEnv": [{"name": "CORP_PROXY", "value": "http://proxy:3128"}],
    "envFrom": [{"secretRef": {"name": "corp-extra"}}],
    "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
    "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/ssl/corp", "readOnly": True}],
    "podAnnotations": {"example.com/team": "mail"},
    "podLabels": {"example.com/cost-centre": "42"},
    "topologySpreadConstraints": [spread],
    "priorityClassName": "mailroom",
    "nodeSelector": {"pool": "general"},
    "services": {"access": {"extraEnv": [{"name": "ACCESS_ONLY", "value": "1"}], "nodeSelector": {"pool": "memory"},
                            "podAnnotations": {"example.com/team": "access"}},
                 "identity": {"resources": OWN_RESOURCES["identity"], "affinity": tier_affinity("identity")},
                 "invitations": {"resources": None},
                 "sync": {"worker": {"tolerations": [{"key": "imap", "operator": "Exists", "effect": "NoSchedule"}], "priorityClassName": "mailroom-workers",
                                     "resources": OWN_RESOURCES["worker"], "affinity": tier_affinity("worker")}}},
    "web": {"podLabels": {"example.com/public": "yes"}, "extraEnv": [{"name": "WEB_ONLY", "value": "1"}],
            "resources": OWN_RESOURCES["web"], "affinity": tier_affinity("web")},
    "migrations": {"extraEnv": [{"name": "MIGRATE_ONLY", "value": "1"}], "activeDeadlineSeconds": 600,
                   "resources": OWN_RESOURCES["migrate"], "affinity": tier_affinity("migrate")},
    "config": {"smtp": {"port": 2525}, "mailServers": {"allowedNetworks": "10.20.0.0/16, 10.30.0.5"}},
    "networkPolicy": {"dependencies": {"postgresPorts": [6432], "kafkaPorts": [9093]}},
})
for label, values in [("TLS everywhere", tls_all), ("extended", extended)]:
    for kube in KUBE_VERSIONS:
        problems = lint_problems(values, kube)
        check(f"helm lint --strict ({label}, Kubernetes {kube})", not problems, str(problems)[:400])
    docs = objects(values)
    invalid = invalid_objects(label, docs)
    check(f"{label}: {len(docs)} objects valid in strict mode", not invalid, "; ".join(invalid))
    pods = pods_of(docs)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    services = {n: p for n, p in pods.items() if n not in ("mailroom-web", "mailroom-migrate")}
    if label == "TLS everywhere":
        want = {f"/etc/mailroom/tls/{n}": f"tls-{n}" for n in ("postgres", "redis", "kafka", "grpc", "otlp")}
        bad = [n for n, p in services.items() if not want.items() <= mounts(p).items()]
        check(f"{label}: every service pod mounts the five TLS Secrets at /etc/mailroom/tls/<name>", not bad, str(bad))
        vols = {v["name"]: v.get("secret", {}).get("secretName") for v in pods["mailroom-identity"]["spec"]["volumes"]}
        check(f"{label}: from the Secrets named in tls.*, gRPC's from cert-manager's Certificate",
              vols.get("tls-postgres") == "pg-ca" and vols.get("tls-grpc") == "mailroom-grpc-tls" and vols.get("tls-otlp") == "otel-ca", str(vols))
        expect = {
            "MAILROOM_DATABASE_TLS__MODE": "verify-full",
            "MAILROOM_DATABASE_TLS__CA_FILE": "/etc/mailroom/tls/postgres/ca.crt",
            "MAILROOM_REDIS_TLS__CA_FILE": "/etc/mailroom/tls/redis/ca.crt",
            "MAILROOM_REDIS_TLS__CERT_FILE": "/etc/mailroom/tls/redis/tls.crt",
            "MAILROOM_REDIS_TLS__KEY_FILE": "/etc/mailroom/tls/redis/tls.key",
            "MAILROOM_KAFKA_PROPERTY_SECURITY_PROTOCOL": "SASL_SSL",
            "MAILROOM_KAFKA_PROPERTY_SASL_MECHANISM": "SCRAM-SHA-512",
            "MAILROOM_KAFKA_PROPERTY_SASL_USERNAME": "mailroom",
            "MAILROOM_KAFKA_PROPERTY_SSL_CA_LOCATION": "/etc/mailroom/tls/kafka/ca.crt",
            "MAILROOM_KAFKA_PROPERTY_CLIENT_RACK": "use1-az1",
            "MAILROOM_GRPC_TLS__CERT_FILE": "/etc/mailroom/tls/grpc/tls.crt",
            "MAILROOM_GRPC_TLS__KEY_FILE": "/etc/mailroom/tls/grpc/tls.key",
            "MAILROOM_GRPC_TLS__CA_FILE": "/etc/mailroom/tls/grpc/ca.crt",
            "MAILROOM_GRPC_TLS__CLIENT_AUTH": "true",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/mailroom/tls/otlp/ca.crt",
        }
        bad = {n: sorted(k for k, v in expect.items() if all_env(p).get(k, {}).get("value") != v) for n, p in services.items()}
        bad = {n: ks for n, ks in bad.items() if ks}
        check(f"{label}: every service pod has the contract's TLS, SASL and librdkafka variables", not bad, str(bad))
        check(f"{label}: the SASL password comes from the Secret",
              all(all_env(p)["MAILROOM_KAFKA_PROPERTY_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "MAILROOM_KAFKA_PROPERTY_SASL_PASSWORD" for p in services.values()))
        literals = [f"{n}: {e['name']}" for n, p in pods.items() for e in all_env(p).values()
                    if any(s in str(e.get("value", "")) for s in ("db-password-x1", "redis-password-x2", "kafka-password-x3", "chart-check-"))]
        check(f"{label}: no secret value in any pod's environment literally", not literals, str(literals))
        endpoints = [e["value"] for p in pods.values() for k, e in all_env(p).items() if k.endswith("_ENDPOINT") and "value" in e and "OTEL" not in k]
        check(f"{label}: every peer is called https://", endpoints and all(v.startswith("https://") for v in endpoints), str(endpoints))
        web = pods["mailroom-web"]
        wenv = all_env(web)
        check(f"{label}: the console gets Redis TLS and gRPC TLS as a caller (and OTLP), nothing of PostgreSQL or Kafka",
              set(mounts(web).values()) == {"tmp", "tls-redis", "tls-grpc", "tls-grpc-client", "tls-otlp"}
              and "MAILROOM_REDIS_TLS__CA_FILE" in wenv and "MAILROOM_GRPC_TLS__CA_FILE" in wenv and "MAILROOM_GRPC_TLS__CERT_FILE" in wenv
              and "MAILROOM_GRPC_TLS__CLIENT_AUTH" not in wenv
              and not any(k.startswith(("MAILROOM_DATABASE_TLS", "MAILROOM_KAFKA_PROPERTY")) for k in wenv), str(sorted(wenv)))
        job = pods["mailroom-migrate"]
        check(f"{label}: the migration Job gets PostgreSQL's TLS only",
              set(mounts(job).values()) == {"tmp", "tls-postgres"} and all_env(job)["MAILROOM_DATABASE_TLS__MODE"]["value"] == "verify-full"
              and not any(k.startswith(("MAILROOM_GRPC_TLS", "MAILROOM_KAFKA_PROPERTY", "MAILROOM_REDIS_TLS")) for k in all_env(job)))
        cert = next((d for d in docs if d["kind"] == "Certificate"), {"spec": {}})
        names = set(cert["spec"].get("dnsNames", []))
        want = {f"mailroom-{s}{suffix}{ns}" for s in SERVICES for suffix in ("", "-peers") for ns in ("", ".mailroom.svc")}
        check(f"{label}: cert-manager's Certificate names every Service and -peers Service, short and .<ns>.svc",
              want <= names and cert["spec"].get("issuerRef", {}).get("kind") == "Issuer", str(sorted(want - names)))
        test_pod = next(d for d in docs if d["kind"] == "Pod")
        tc = test_pod["spec"]["containers"][0]
        check(f"{label}: helm test calls https:// with the CA and its certificate",
              all(a.startswith("https://") for a in tc["args"][1:]) and {e["name"] for e in tc.get("env", [])} >= {"MAILROOM_GRPC_TLS__CA_FILE", "MAILROOM_GRPC_TLS__CERT_FILE"},
              str(tc["args"]))
        # The callers that serve nothing never hold the services' key: ca.crt only from the
        # services' Secret, their own client-only certificate (cert-manager's) for mutual TLS.
        for who, spec in (("the console", web["spec"]), ("helm test", test_pod["spec"])):
            vols = {v["name"]: v.get("secret", {}) for v in spec.get("volumes", [])}
            cenv = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
            check(f"{label}: {who} mounts only ca.crt of the services' gRPC Secret and presents its own client certificate",
                  vols.get("tls-grpc", {}).get("items") == [{"key": "ca.crt", "path": "ca.crt"}]
                  and vols.get("tls-grpc-client", {}).get("secretName") == "mailroom-grpc-client-tls"
                  and {i["key"] for i in vols["tls-grpc-client"].get("items", [])} == {"tls.crt", "tls.key"}
                  and cenv.get("MAILROOM_GRPC_TLS__CERT_FILE") == "/etc/mailroom/tls/grpc-client/tls.crt"
                  and cenv.get("MAILROOM_GRPC_TLS__KEY_FILE") == "/etc/mailroom/tls/grpc-client/tls.key", str(vols))
        client_cert = [d for d in docs if d["kind"] == "Certificate" and d["metadata"]["name"] == "mailroom-grpc-client"]
        check(f"{label}: with clientAuth, cert-manager issues a second, client-only Certificate mailroom-grpc-client",
              len(client_cert) == 1 and "server auth" not in client_cert[0]["spec"]["usages"], str(client_cert)[:200])
        modes = {(n, v["name"]): v["secret"].get("defaultMode") for n, p in list(pods.items()) + [("test", test_pod)]
                 for v in p["spec"].get("volumes", []) if "secret" in v}
        check(f"{label}: every TLS Secret volume is mode 0440 (owner and fsGroup, no one else)",
              modes and set(modes.values()) == {0o440}, str(modes)[:300])
        ports = egress_ports(policies["mailroom-identity"], with_to=False)
        check(f"{label}: policy ports follow the URLs (Redis 6380, Kafka 9096) and OTLP 4317",
              {5432, 6380, 9096, 4317} <= set(ports) and 9092 not in ports, str(ports))
    if label == "extended":
        problems = {}
        for n, p in pods.items():
            spec = p["spec"]
            c = spec["containers"][0]
            env = all_env(p)
            miss = []
            if env.get("CORP_PROXY", {}).get("value") != "http://proxy:3128":
                miss.append("extraEnv")
            if {"secretRef": {"name": "corp-extra"}} not in c.get("envFrom", []):
                miss.append("envFrom")
            if mounts(p).get("/etc/ssl/corp") != "corp-ca" or "corp-ca" not in {v["name"] for v in spec["volumes"]}:
                miss.append("volumes")
            if "example.com/team" not in p["metadata"].get("annotations", {}) or p["metadata"]["labels"].get("example.com/cost-centre") != "42":
                miss.append("annotations/labels")
            tsc = spec.get("topologySpreadConstraints", [])
            if len(tsc) != 1 or tsc[0]["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") != p["metadata"]["labels"]["app.kubernetes.io/component"]:
                miss.append("topologySpreadConstraints")
            if spec.get("imagePullSecrets") != [{"name": "regcred"}] or not spec.get("priorityClassName"):
                miss.append("pullSecrets/priorityClassName")
            if miss:
                problems[n] = miss
        # The global lists (maybe carrying credentials) reach the services and the Job, not
        # the public console, which takes only web.extraEnv/envFrom/extraVolumes.
        web_missing = problems.pop("mailroom-web", [])
        check(f"{label}: extra env, envFrom, volumes, annotations, labels, topology spread (own pods), pull secrets and priority in every service Deployment and the Job",
              not problems and len(pods) == 8, str(problems) + str(sorted(pods)))
        check(f"{label}: the global extraEnv/envFrom/extraVolumes do not reach the console (web.* do); annotations, labels, spread and pull secrets do",
              sorted(web_missing) == ["envFrom", "extraEnv", "volumes"]
              and all_env(pods["mailroom-web"]).get("WEB_ONLY", {}).get("value") == "1", str(web_missing))
        test_spec = next(d for d in docs if d["kind"] == "Pod")["spec"]
        check(f"{label}: the helm test pod gets the pull secrets, node selector and priority the Job gets",
              test_spec.get("imagePullSecrets") == [{"name": "regcred"}] and test_spec.get("nodeSelector") == {"pool": "general"}
              and test_spec.get("priorityClassName") == "mailroom", str(test_spec)[:300])
        acc, worker = pods["mailroom-access"], pods["mailroom-sync-worker"]
        check(f"{label}: a component's own values: added env, replaced nodeSelector, merged annotations, its own tolerations and priority",
              "ACCESS_ONLY" in all_env(acc) and "ACCESS_ONLY" not in all_env(pods["mailroom-identity"])
              and acc["spec"]["nodeSelector"] == {"pool": "memory"} and pods["mailroom-identity"]["spec"]["nodeSelector"] == {"pool": "general"}
              and acc["metadata"]["annotations"]["example.com/team"] == "access"
              and worker["spec"]["tolerations"][0]["key"] == "imap" and worker["spec"]["priorityClassName"] == "mailroom-workers"
              and pods["mailroom-web"]["metadata"]["labels"].get("example.com/public") == "yes"
              and "MIGRATE_ONLY" in all_env(pods["mailroom-migrate"]))
        chart_defaults = yaml.safe_load(open(f"{CHART}/values.yaml"))
        want_resources = {
            "mailroom-identity": OWN_RESOURCES["identity"], "mailroom-sync-worker": OWN_RESOURCES["worker"],
            "mailroom-web": OWN_RESOURCES["web"], "mailroom-migrate": OWN_RESOURCES["migrate"],
            "mailroom-invitations": OWN_RESOURCES["global"],
            "mailroom-access": chart_defaults["services"]["access"]["resources"],
            "mailroom-mailboxes": chart_defaults["services"]["mailboxes"]["resources"],
            "mailroom-sync-scheduler": chart_defaults["services"]["sync"]["scheduler"]["resources"],
        }
        got = {n: p["spec"]["containers"][0].get("resources") for n, p in pods.items()}
        wrong = {n: got.get(n) for n in set(want_resources) | set(got) if got.get(n) != want_resources.get(n)}
        check(f"{label}: per-component resources: identity, sync worker, console and Job exactly their own; access, mailboxes, scheduler the chart's; invitations (null) the global",
              not wrong, str(wrong)[:400])
        want_affinity = {n: tier_affinity("global") for n in pods}
        want_affinity.update({"mailroom-identity": tier_affinity("identity"), "mailroom-sync-worker": tier_affinity("worker"),
                              "mailroom-web": tier_affinity("web"), "mailroom-migrate": tier_affinity("migrate")})
        got = {n: p["spec"].get("affinity") for n, p in pods.items()}
        wrong = {n: got.get(n) for n in want_affinity if got.get(n) != want_affinity[n]}
        check(f"{label}: per-component affinity: identity, sync worker, console and Job exactly their own; the others the global",
              not wrong and len(pods) == 8, str(wrong)[:400])
        job_doc = next(d for d in docs if d["kind"] == "Job")
        js = job_doc["spec"]["template"]["spec"]
        hooks = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("annotations", {}) for d in docs if d["metadata"]["name"] == "mailroom-migrate"}
        weight = lambda k: int(hooks[(k, "mailroom-migrate")].get("helm.sh/hook-weight", "0"))  # noqa: E731
        check(f"{label}: the migration Job: own ServiceAccount, resources, deadline, backoff, pull secrets, hardened, hooks in order (ServiceAccount and NetworkPolicy first), replaced before the next",
              js["serviceAccountName"] == "mailroom-migrate" and js["containers"][0].get("resources", {}).get("limits")
              and job_doc["spec"]["activeDeadlineSeconds"] == 600 and job_doc["spec"]["backoffLimit"] >= 1
              and js["imagePullSecrets"] == [{"name": "regcred"}] and js["securityContext"].get("runAsNonRoot")
              and js["containers"][0]["securityContext"].get("readOnlyRootFilesystem")
              and all(h.get("helm.sh/hook") == "pre-install,pre-upgrade" and h.get("helm.sh/hook-delete-policy") == "before-hook-creation" for h in hooks.values())
              and weight("ServiceAccount") < weight("Job") and weight("NetworkPolicy") < weight("Job"), str(hooks))
        mp = policies["mailroom-migrate"]
        check(f"{label}: the Job's NetworkPolicy: nothing in, DNS and PostgreSQL (5432, 6432) out",
              mp["spec"]["ingress"] == [] and egress_ports(mp) == [5432, 6432], str(egress_ports(mp)))
        grace = {n: p["spec"]["terminationGracePeriodSeconds"] for n, p in pods.items() if n != "mailroom-migrate"}
        stop = {n: p["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] for n, p in pods.items() if n != "mailroom-migrate"}
        check(f"{label}: grace = preStop 5 s + drain (shutdownDrainMs 15 s) + longest call (30 s) + own stop (5 s; the workers 120 s)",
              set(stop.values()) == {5} and grace.pop("mailroom-sync-worker") == 170 and set(grace.values()) == {55}, str(grace))
        startup = [n for n, p in pods.items() if n != "mailroom-migrate" and not p["spec"]["containers"][0].get("startupProbe")]
        check(f"{label}: a startupProbe on every Deployment", not startup, str(startup))
        smtp = [r for r in policies["mailroom-invitations"]["spec"]["egress"] if any(p["port"] == 2525 for p in r.get("ports", []))]
        check(f"{label}: SMTP egress on config.smtp.port (2525)", len(smtp) == 1 and not smtp[0].get("to"), str(smtp))
        rules = [r for r in policies["mailroom-sync-worker"]["spec"]["egress"] if any(p["port"] == 993 for p in r.get("ports", []))]
        blocks = [t["ipBlock"] for r in rules for t in r.get("to", [])]
        any_v4 = next((b for b in blocks if b["cidr"] == "0.0.0.0/0"), {})
        any_v6 = next((b for b in blocks if b["cidr"] == "::/0"), {})
        check(f"{label}: the mail servers anywhere but the cluster's and private ranges, and config.mailServers.allowedNetworks explicitly",
              {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} <= set(any_v4.get("except", []))
              and "fc00::/7" in any_v6.get("except", [])
              and {"cidr": "10.20.0.0/16"} in blocks and {"cidr": "10.30.0.5/32"} in blocks
              and all(r.get("to") for r in rules), str(blocks))
        ports = egress_ports(policies["mailroom-identity"], with_to=False)
        check(f"{label}: dependency ports from the URLs plus postgresPorts/kafkaPorts (PgBouncer 6432, Kafka 9093)",
              {6432, 9092, 9093, 6379} <= set(ports), str(ports))

# The budget never blocks a drain: minAvailable that would leave nothing to evict falls back.
dev_min = merge(dev, {"podDisruptionBudget": {"enabled": True, "minAvailable": 1}})
pdbs = {d["metadata"]["name"]: d["spec"] for d in objects(dev_min) if d["kind"] == "PodDisruptionBudget"}
check("one replica with minAvailable 1: maxUnavailable 1 instead (a drain is never blocked)",
      pdbs and all(s.get("maxUnavailable") == 1 and "minAvailable" not in s for s in pdbs.values()), str(pdbs)[:300])
pdbs = {d["metadata"]["name"]: d["spec"] for d in objects(merge(minimal, {"podDisruptionBudget": {"minAvailable": 1}})) if d["kind"] == "PodDisruptionBudget"}
check("two replicas with minAvailable 1: minAvailable kept",
      pdbs["mailroom-identity"] == {"minAvailable": 1, "selector": pdbs["mailroom-identity"]["selector"]}, str(pdbs["mailroom-identity"]))

# Misspelt keys anywhere are refused by the schema, by `helm lint` and by the render alike.
TYPOS = [
    ("services.identity.replica", merge(minimal, {"services": {"identity": {"replica": 3}}})),
    ("tls.postgress", merge(minimal, {"tls": {"postgress": {"enabled": True}}})),
    ("extraenv at the top", merge(minimal, {"extraenv": [{"name": "A", "value": "1"}]})),
    ("services.sync.worker.nodeselector", merge(minimal, {"services": {"sync": {"worker": {"nodeselector": {"a": "b"}}}}})),
    ("migrations.activeDeadline", merge(minimal, {"migrations": {"activeDeadline": 60}})),
    ("podDisruptionBudget.maxUnavailable 0 (blocks every drain)", merge(minimal, {"podDisruptionBudget": {"maxUnavailable": 0}})),
]
for label, values in TYPOS:
    problems = lint_problems(values, KUBE_VERSIONS[0])
    try:
        objects(values)
        rendered = True
    except helm.HelmError:
        rendered = False
    check(f"refused by helm lint and the render: {label}", problems and not rendered, str(problems)[:200])

# A long release name: every Service name fits Kubernetes' 63 characters, and each headless
# "-peers" Service keeps its suffix (so it never takes its ClusterIP Service's name).
long_release = "a-release-with-a-rather-long-name-indeed-xyz"
long_docs = [
    d
    for path, text in sorted(
        helm.Chart.load(CHART).render(minimal, name=long_release, namespace="m", is_install=True).items()
    )
    if path.endswith((".yaml", ".yml"))
    for d in yaml.safe_load_all(text)
    if d
]
long_services = [d["metadata"]["name"] for d in long_docs if d["kind"] == "Service"]
check("long release name: Service names fit 63 characters, one headless -peers Service per API",
      all(len(n) <= 63 for n in long_services)
      and len(set(long_services)) == len(long_services)
      and sum(n.endswith("-peers") for n in long_services) == len(SERVICES),
      str(long_services))

# Broken values: each must be refused, with words that say what to fix.
BROKEN = [
    ("no database URL", {"secrets": {k: v for k, v in minimal["secrets"].items() if k != "databaseUrl"}}, "secrets.databaseUrl"),
    ("no signing key", {"secrets": {k: v for k, v in minimal["secrets"].items() if k != "signingKey"}}, "mailroom keygen"),
    ("no sealing keys", {"secrets": {k: v for k, v in minimal["secrets"].items() if k != "sealingKeys"}}, "keygen --sealing"),
    ("no sync credential", {"secrets": {k: v for k, v in minimal["secrets"].items() if k != "syncClientSecret"}}, "syncClientSecret"),
    ("no invitations credential", {"secrets": {k: v for k, v in minimal["secrets"].items() if k != "invitationsClientSecret"}}, "invitationsClientSecret"),
    ("a port out of range", merge(minimal, {"services": {"identity": {"grpcPort": 99999}}}), ""),
    ("a misspelt service", merge(minimal, {"services": {"invitation": {"enabled": True, "grpcPort": 1, "metricsPort": 2}}}), ""),
    ("an unknown SMTP security", merge(minimal, {"config": {"smtp": {"security": "ssl"}}}), ""),
    ("a KEDA Prometheus address that is no URL", merge(minimal, {"keda": {"prometheus": {"serverAddress": "prometheus:9090"}}}), ""),
    ("a grace period too short for the workers", merge(minimal, {"services": {"sync": {"worker": {"terminationGracePeriodSeconds": 5}}}}), ""),
    ("an alert ratio above 1", merge(minimal, {"prometheusRule": {"enabled": True, "rpcErrorRatio": 5}}), ""),
]
for label, values, words in BROKEN:
    try:
        objects(values)
        check(f"refused: {label}", False, "rendered anyway")
    except helm.HelmError as err:
        check(f"refused: {label}" + (f" (says `{words}`)" if words else " (values.schema.json)"), words in str(err), str(err)[:200])

# The dev cluster's dependencies.
for doc in yaml.safe_load_all(open("k8s/dependencies.yaml")):
    try:
        for kube in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, kube, strict=True)
        check(f"k8s/dependencies.yaml: {doc['kind']} {doc['metadata']['name']} is valid", True)
    except Exception as err:  # noqa: BLE001
        check(f"k8s/dependencies.yaml: {doc['kind']} {doc['metadata']['name']} is valid", False, str(err)[:300])

# The Tiltfile, run with Tilt's functions stubbed.
import starlark  # noqa: E402

calls = []


def stub(name):
    return lambda *a, **k: calls.append((name, a, k)) or []


module = starlark.Module()
for fn in ["k8s_yaml", "docker_build", "helm", "k8s_resource", "local_resource"]:
    module.add_callable(fn, stub(fn))
module["TRIGGER_MODE_MANUAL"] = 1
try:
    starlark.eval(module, starlark.parse("Tiltfile", open("Tiltfile").read(), starlark.Dialect.extended()), starlark.Globals.standard())
    names = [c[0] for c in calls]
    forwards = sorted(p.split(":")[0] for c in calls if c[0] == "k8s_resource" for p in c[2].get("port_forwards", []) if p.startswith("500"))
    check("Tiltfile runs: dependencies, image, chart, five gRPC port-forwards, the test command",
          {"k8s_yaml", "docker_build", "helm", "k8s_resource", "local_resource"} <= set(names)
          and forwards == ["50051", "50052", "50053", "50054", "50055"]
          and any(c[0] == "local_resource" and c[2].get("cmd") == ".ci/test" for c in calls), str(forwards))
except Exception as err:  # noqa: BLE001
    check("Tiltfile runs", False, str(err)[:300])


def check_sync_autoscaling():
    """The sync workers' autoscaler on overdue mailboxes and IDLE load, in both modes: the HPA
    with both metrics, KEDA with both Prometheus triggers and the Kafka-lag trigger (its
    TriggerAuthentication when given), more workers than partitions allowed (IDLE capacity is
    not bound by them), and the removed `due` values refused with what to set instead."""
    def scaler(values):
        found = [d for d in objects(values) if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
        return found[0] if len(found) == 1 else None

    def parses(query):
        try:
            promql_parser.parse(query)
            return True
        except Exception:  # noqa: BLE001
            return False

    hpa = scaler(minimal)
    metrics = {m[m["type"].lower()]["metric"]["name"]: m[m["type"].lower()] | {"type": m["type"]}
               for m in (hpa or {}).get("spec", {}).get("metrics", [])}
    overdue = metrics.get("mailroom_sync_overdue_mailboxes", {})
    waiting = metrics.get("mailroom_events_lag_records", {})
    idle = metrics.get("mailroom_sync_idle_connections", {})
    check("sync autoscaling (HPA): external overdue mailboxes and sync requests waiting for the release, pods IDLE connections; 200, 100 and 1,500 per worker",
          hpa and hpa["kind"] == "HorizontalPodAutoscaler" and len(metrics) == 3
          and overdue.get("type") == "External"
          and overdue["metric"]["selector"]["matchLabels"] == {"namespace": "mailroom", "job": "mailroom-sync"}
          and overdue["target"] == {"type": "AverageValue", "averageValue": "200"}
          and waiting.get("type") == "External"
          and waiting["metric"]["selector"]["matchLabels"] == {"namespace": "mailroom", "job": "mailroom-sync"}
          and waiting["target"] == {"type": "AverageValue", "averageValue": "100"}
          and idle.get("type") == "Pods"
          and idle["metric"]["selector"]["matchLabels"] == {"job": "mailroom-sync"}
          and idle["target"] == {"type": "AverageValue", "averageValue": "1500"}, str(hpa)[:400])

    keda = scaler(merge(minimal, {"keda": {"enabled": True, "kafkaAuthenticationRef": "kafka-sasl"}}))
    triggers = (keda or {}).get("spec", {}).get("triggers", [])
    prom = {t["name"]: t for t in triggers if t["type"] == "prometheus"}
    kafka = [t for t in triggers if t["type"] == "kafka"]
    overdue, idle = prom.get("overdue-mailboxes"), prom.get("idle-connections")
    check("sync autoscaling (KEDA): Prometheus triggers on overdue mailboxes (max per tier, summed) and IDLE connections (summed), and the Kafka lag with its TriggerAuthentication",
          keda and keda["kind"] == "ScaledObject" and len(triggers) == 3
          and overdue and overdue["metadata"]["query"] == ('clamp_max(sum(max by (tier) (mailroom_sync_overdue_mailboxes{namespace="mailroom",job="mailroom-sync"})), '
                                                            'scalar(max(mailroom_sync_request_partitions{namespace="mailroom",job="mailroom-sync"}) or vector(8)) * 200)')
          and overdue["metadata"]["threshold"] == "200"
          and idle and idle["metadata"]["query"] == 'sum(mailroom_sync_idle_connections{namespace="mailroom",job="mailroom-sync"})'
          and idle["metadata"]["threshold"] == "1500"
          and all(parses(t["metadata"]["query"]) and t["metadata"]["serverAddress"].startswith("http") for t in prom.values())
          and len(kafka) == 1 and kafka[0]["metadata"]["topic"] == "mailroom.sync.requests"
          and kafka[0]["metadata"]["consumerGroup"] == "mailroom-sync-workers"
          and kafka[0].get("authenticationRef") == {"name": "kafka-sasl"}, str(triggers)[:600])
    plain = scaler(merge(minimal, {"keda": {"enabled": True}}))
    check("sync autoscaling (KEDA): no TriggerAuthentication unless one is named",
          plain and all("authenticationRef" not in t for t in plain["spec"]["triggers"]), str(plain)[:300])

    # IDLE watches are spread by Redis leases, not partitions: more workers than partitions render.
    for label, values in (("HPA", merge(minimal, {"services": {"sync": {"worker": {"autoscaling": {"maxReplicas": 20}}}}})),
                          ("KEDA", merge(minimal, {"keda": {"enabled": True}, "config": {"kafkaPartitions": 4},
                                                   "services": {"sync": {"worker": {"autoscaling": {"maxReplicas": 20}}}}}))):
        try:
            found = scaler(values)
            top = found and found["spec"].get("maxReplicas", found["spec"].get("maxReplicaCount"))
            check(f"sync autoscaling ({label}): maxReplicas 20 above config.kafkaPartitions renders", top == 20, str(found)[:300])
        except helm.HelmError as err:
            check(f"sync autoscaling ({label}): maxReplicas 20 above config.kafkaPartitions renders", False, str(err)[:300])

    refused = [
        ("the removed dueMailboxesPerWorker", {"services": {"sync": {"worker": {"autoscaling": {"dueMailboxesPerWorker": 200}}}}}, "overdueMailboxesPerWorker"),
        ("the removed keda.prometheus.dueMailboxesThreshold", {"keda": {"enabled": True, "prometheus": {"dueMailboxesThreshold": 200}}}, "services.sync.worker.autoscaling"),
        ("IDLE connections per worker above idleMaxConnections", {"services": {"sync": {"worker": {"autoscaling": {"idleConnectionsPerWorker": 2500}}}}}, "idleMaxConnections"),
        ("requests waiting per worker not above the worker's concurrency", {"services": {"sync": {"worker": {"autoscaling": {"requestLagPerWorker": 32}}}}}, "services.sync.worker.concurrency"),
        ("KEDA's lag threshold not above the worker's concurrency", {"keda": {"enabled": True, "lagThreshold": 32}}, "keda.lagThreshold"),
        ("a TriggerAuthentication name that is no Kubernetes name", {"keda": {"enabled": True, "kafkaAuthenticationRef": "Kafka SASL"}}, ""),
    ]
    for label, extra, words in refused:
        try:
            objects(merge(minimal, extra))
            check(f"sync autoscaling refuses {label}", False, "rendered anyway")
        except helm.HelmError as err:
            check(f"sync autoscaling refuses {label}" + (f" (says `{words}`)" if words else " (values.schema.json)"), words in str(err), str(err)[:200])


check_sync_autoscaling()

def check_review_fixes():
    """The review's fixes, each asserted: the gRPC callers' client-only certificate, Kafka
    properties without secrets or switched-off TLS, the metadata ranges never reachable, the
    Job's database-only environment, the sync's alerts and autoscaler on this release's jobs,
    and the install/upgrade instructions in NOTES."""
    def refused(label, values, words):
        try:
            objects(values)
            check(f"refused: {label}", False, "rendered anyway")
        except helm.HelmError as err:
            check(f"refused: {label}" + (f" (says `{words}`)" if words else " (values.schema.json)"), words in str(err), str(err)[:200])

    grpc_own = {"tls": {"grpc": {"enabled": True, "secretName": "grpc-tls", "clientAuth": True}}}
    refused("mutual gRPC TLS with your own Secret and no client certificate for the console",
            merge(minimal, grpc_own), "tls.grpc.clientSecretName")
    docs = objects(merge(minimal, merge(grpc_own, {"tls": {"grpc": {"clientSecretName": "console-client"}}})))
    web = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mailroom-web")["spec"]["template"]["spec"]
    vols = {v["name"]: v.get("secret", {}) for v in web["volumes"]}
    check("tls.grpc.clientSecretName: the console presents that certificate, and gets only ca.crt of the services' Secret",
          vols.get("tls-grpc-client", {}).get("secretName") == "console-client"
          and vols.get("tls-grpc", {}).get("items") == [{"key": "ca.crt", "path": "ca.crt"}]
          and not any(d["kind"] == "Certificate" for d in docs), str(vols))

    refused("tls.postgres with a CA Secret and mode require (the CA would check nothing)",
            merge(minimal, {"tls": {"postgres": {"enabled": True, "secretName": "pg-ca", "mode": "require"}}}),
            "tls.postgres.mode must be verify-full")
    refused("tls.postgres.mode verify-ca (sqlx trusts public roots too: no host name check)",
            merge(minimal, {"tls": {"postgres": {"enabled": True, "mode": "verify-ca"}}}), "")

    kafka_tls = {"tls": {"kafka": {"enabled": True}}}
    for prop in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret", "ssl.keystore.password",
                 "sasl.oauthbearer.config", "sasl.oauthbearer.extensions", "ssl.key.pem"):
        refused(f"config.kafka.properties.{prop} (a secret as a plain env value)",
                merge(minimal, {"config": {"kafka": {"properties": {prop: "x"}}}}), "")
    for label, props, words in (("security.protocol PLAINTEXT", {"security.protocol": "PLAINTEXT"}, "tls.kafka.allowInsecure"),
                                ("security.protocol sasl_plaintext", {"security.protocol": "sasl_plaintext"}, "tls.kafka.allowInsecure"),
                                ("enable.ssl.certificate.verification false", {"enable.ssl.certificate.verification": False}, "tls.kafka.allowInsecure"),
                                ("ssl.endpoint.identification.algorithm none", {"ssl.endpoint.identification.algorithm": "none"}, "tls.kafka.allowInsecure")):
        refused(f"tls.kafka.enabled with {label}", merge(minimal, merge(kafka_tls, {"config": {"kafka": {"properties": props}}})), words)
    try:
        objects(merge(minimal, {"tls": {"kafka": {"enabled": True, "allowInsecure": True}},
                                "config": {"kafka": {"properties": {"ssl.endpoint.identification.algorithm": "none"}}}}))
        check("tls.kafka.allowInsecure: true lets an operator skip the host name check on purpose", True)
    except helm.HelmError as err:
        check("tls.kafka.allowInsecure: true lets an operator skip the host name check on purpose", False, str(err)[:200])
    oauth = objects(merge(minimal, {"secrets": {"kafkaOauthClientSecret": "oauth-x4"},
                                    "config": {"kafka": {"sasl": {"mechanism": "OAUTHBEARER"}}}}))
    ident = env_of(next(d for d in oauth if d["kind"] == "Deployment" and d["metadata"]["name"] == "mailroom-identity"))
    secret = next(d for d in oauth if d["kind"] == "Secret" and d["metadata"]["name"] == "mailroom-secrets")
    check("secrets.kafkaOauthClientSecret: MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET from the Secret, never literal",
          ident.get("MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("key")
          == "MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET"
          and secret["stringData"].get("MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET") == "oauth-x4"
          and "oauth-x4" not in json.dumps([d for d in oauth if d["kind"] == "Deployment"]), str(sorted(ident))[:200])

    # Overriding clusterCidrs cannot open the metadata endpoint; an external relay is no
    # longer "anywhere", an in-cluster one still is.
    docs = objects(merge(minimal, {"networkPolicy": {"clusterCidrs": ["10.0.0.0/8"]},
                                   "config": {"smtp": {"host": "email-smtp.us-east-1.amazonaws.com", "port": 587}}}))
    pol = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    def any_blocks(policy, port):
        rules = [r for r in policy["spec"]["egress"] if any(p["port"] == port for p in r.get("ports", []))]
        return rules, {b["ipBlock"]["cidr"]: set(b["ipBlock"].get("except", [])) for r in rules for b in r.get("to", []) if "ipBlock" in b}
    v4, v6 = {"169.254.0.0/16", "10.0.0.0/8"}, {"fe80::/10", "fc00::/7", "::ffff:0:0/96", "64:ff9b::/96"}
    rules, blocks = any_blocks(pol["mailroom-sync-worker"], 993)
    check("mail-server egress excepts the metadata, link-local, ULA, IPv4-mapped and NAT64 ranges even with clusterCidrs overridden",
          rules and all(r.get("to") for r in rules) and blocks.get("0.0.0.0/0") == v4 and blocks.get("::/0") == v6, str(blocks))
    rules, blocks = any_blocks(pol["mailroom-invitations"], 587)
    check("SMTP egress to an external relay: anywhere but those ranges (not any destination)",
          len(rules) == 1 and rules[0].get("to") and blocks.get("0.0.0.0/0") == v4 and blocks.get("::/0") == v6, str(rules)[:300])
    for host in ("smtp", "postfix.mail.svc", "relay.mail.svc.cluster.local"):
        docs = objects(merge(minimal, {"config": {"smtp": {"host": host, "port": 587}}}))
        inv = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mailroom-invitations")
        rules, _ = any_blocks(inv, 587)
        check(f"SMTP egress to the in-cluster relay {host}: any destination on its port",
              len(rules) == 1 and not rules[0].get("to"), str(rules))

    # The Job: the database's environment only; MIGRATE_DATABASE_URL when given.
    for label, values, key in (("chart-made Secret", minimal, "DATABASE_URL"),
                               ("secrets.migrateDatabaseUrl", merge(minimal, {"secrets": {"migrateDatabaseUrl": "postgres://m:x@pg-direct:5433/m"}}), "MIGRATE_DATABASE_URL"),
                               ("existing Secret with migrations.directDatabaseUrl", {"secrets": {"existingSecret": "prod"}, "migrations": {"directDatabaseUrl": True}}, "MIGRATE_DATABASE_URL")):
        docs = objects(values)
        job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in job["env"] if "valueFrom" in e}
        check(f"the migration Job ({label}): DATABASE_URL from the Secret's {key}, no other secret, no Redis URL",
              refs == {"DATABASE_URL": key} and "redis://unused" in json.dumps(job["env"]) and not job.get("envFrom"), str(refs))
        if key == "MIGRATE_DATABASE_URL" and label.startswith("secrets"):
            mp = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mailroom-migrate")
            check("the Job's NetworkPolicy reaches MIGRATE_DATABASE_URL's port", 5433 in egress_ports(mp), str(egress_ports(mp)))

    # Alerts and the autoscaler on this release's jobs; the review's alert changes.
    docs = objects(merge(everything, {"tls": {"grpc": {"enabled": True, "clientAuth": True,
                                                       "certManager": {"enabled": True, "issuerRef": {"name": "ca"}}}}}))
    rules = {r["alert"]: r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]}
    import re
    unscoped = sorted({f"{a}: {m.group(1)}" for a, r in rules.items()
                       for m in re.finditer(r"\b((?:mailroom|process)_[a-z_]+)\{([^}]*)\}", r["expr"]) if "job=" not in m.group(2)})
    check("every alert selects this release's jobs, not only the namespace", not unscoped, str(unscoped))
    sync_unscoped = sorted({a for a, r in rules.items() for m in re.finditer(r"\b(mailroom_sync_[a-z_]+)\{([^}]*)\}", r["expr"])
                            if 'job="mailroom-sync"' not in m.group(2)})
    check("every sync series in the alerts selects job=\"mailroom-sync\" (the ServiceMonitor's job)", not sync_unscoped, str(sync_unscoped))
    rpc = rules.get("MailroomRpcErrors", {}).get("expr", "")
    check("MailroomRpcErrors (critical) leaves out the mail-server methods' UNAVAILABLE; MailroomMailServersUnavailable (warning) covers it",
          'method!~"' in rpc and "GetMessageBody" in rpc and rules.get("MailroomRpcErrors", {}).get("labels", {}).get("severity") == "critical"
          and rules.get("MailroomMailServersUnavailable", {}).get("labels", {}).get("severity") == "warning"
          and 'code="14"' in rules["MailroomMailServersUnavailable"]["expr"], rpc[:300])
    check("MailroomSyncWorkersAtMaximum only when the autoscaler's max is above its min",
          "kube_horizontalpodautoscaler_spec_min_replicas" in rules.get("MailroomSyncWorkersAtMaximum", {}).get("expr", ""))
    check("MailroomSyncWorkersBeyondPartitions only while overdue mailboxes are high",
          "mailroom_sync_overdue_mailboxes" in rules.get("MailroomSyncWorkersBeyondPartitions", {}).get("expr", ""))
    check("MailroomSyncErrors' traffic guard is prometheusRule.minSyncsPerSecond (0.05)",
          "[10m])) > 0.05" in rules.get("MailroomSyncErrors", {}).get("expr", ""), rules.get("MailroomSyncErrors", {}).get("expr", ""))
    tls_alert = rules.get("MailroomTlsCertificateExpiring", {})
    check("MailroomTlsCertificateExpiring: a certificate file ending within 7 days",
          "mailroom_tls_cert_expiry_timestamp_seconds" in tls_alert.get("expr", "") and "7 * 86400" in tls_alert.get("expr", "")
          and tls_alert.get("annotations", {}).get("runbook_url", "").endswith("/MailroomTlsCertificateExpiring.md"), str(tls_alert)[:200])
    dep = rules.get("MailroomDependencyDown", {}).get("annotations", {}).get("description", "")
    check("MailroomDependencyDown says the pod stays in service", "stays in service" in dep, dep)
    runbook = open("docs/runbooks/MailroomDependencyDown.md").read()
    check("MailroomDependencyDown's runbook says a dependency down does not take pods out of service",
          "does **not** take the pod out of service" in runbook)

    # Install/upgrade: --wait --timeout past the Job's deadline; helm test after --wait.
    notes = render(minimal).get("mailroom/templates/NOTES.txt", "")
    readme = open("README.md").read()
    check("NOTES and README: install/upgrade with --wait --timeout 20m (past activeDeadlineSeconds), no upgrade while the Job runs, helm test after --wait",
          "--wait --timeout 20m" in notes and "activeDeadlineSeconds" in notes and "job/mailroom-migrate still runs" in notes
          and "helm install mailroom charts/mailroom -n mailroom -f mailroom-values.yaml --wait --timeout 20m" in readme
          and "only after --wait" in readme and "server-name: mailroom-identity" in readme and "usages: [client auth" in readme
          and "duration: 87600h" in readme, notes[-600:])


check_review_fixes()


def check_operator_credential():
    """The operator's credential: identity gets only its SHA-256, from the chart's Secret; no
    other workload gets it, the digest or the secret."""
    import hashlib
    secret = "chart-check-operator-x5"
    docs = objects(merge(minimal, {"secrets": {"operatorClientSecret": secret}}))
    pods = pods_of(docs)
    key = "MAILROOM_IDENTITY__SERVICE_CLIENTS__OPERATOR"
    chart_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == "mailroom-secrets")
    ref = all_env(pods["mailroom-identity"]).get(key, {}).get("valueFrom", {}).get("secretKeyRef", {})
    check("operator credential: identity gets MAILROOM_IDENTITY__SERVICE_CLIENTS__OPERATOR from the Secret, the secret's sha256 digest",
          ref.get("name") == "mailroom-secrets" and ref.get("key") == key
          and chart_secret["stringData"].get(key) == "sha256:" + hashlib.sha256(secret.encode()).hexdigest(), str(ref))
    others = {n: p for n, p in pods.items() if n != "mailroom-identity"}
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    others["helm test"] = test_pod
    holders = sorted(n for n, p in others.items()
                     if any("OPERATOR" in e["name"] or "OPERATOR" in json.dumps(e.get("valueFrom", {})) for c in p["spec"]["containers"] for e in c.get("env", []))
                     or secret in json.dumps(p) or chart_secret["stringData"][key] in json.dumps(p))
    expected = {f"mailroom-{n}" for n in ("web", "access", "mailboxes", "invitations", "sync-scheduler", "sync-worker", "migrate")} | {"helm test"}
    check("operator credential: no other workload (console, access, mailboxes, invitations, sync scheduler and workers, Job, helm test) gets it",
          set(others) == expected and not holders, str(holders) + str(sorted(others)))


check_operator_credential()


def check_alert_guards():
    """The ratio and p99 alerts stay quiet without traffic: each ends in `and <traffic rate> >
    <minimum>`, the minimum from prometheusRule (odd values here, so no threshold matches)."""
    mins = {"minRequestsPerSecond": 0.37, "minSyncsPerSecond": 0.023}
    docs = objects(merge(everything, {"prometheusRule": mins}))
    rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    guards = {  # alert: (the minimum's key, the traffic's series)
        "MailroomRpcErrors": ("minRequestsPerSecond", "mailroom_grpc_requests_total"),
        "MailroomRpcLatency": ("minRequestsPerSecond", "mailroom_grpc_request_duration_seconds_count"),
        "MailroomCallsRefused": ("minRequestsPerSecond", "mailroom_grpc_requests_total"),
        "MailroomMailServersUnavailable": ("minSyncsPerSecond", "mailroom_grpc_requests_total"),
        "MailroomSyncErrors": ("minSyncsPerSecond", "mailroom_sync_outcomes_total"),
    }
    latency_count = len(yaml.safe_load(open(f"{CHART}/values.yaml"))["prometheusRule"]["rpcLatencyP99Seconds"])

    def guarded(expr, key, series):
        try:
            tree = promql_parser.parse(expr)
        except Exception:  # noqa: BLE001
            return False
        guard = tree.rhs if isinstance(tree, promql_parser.BinaryExpr) and str(tree.op) == "and" else None
        return (isinstance(guard, promql_parser.BinaryExpr) and str(guard.op) == ">"
                and isinstance(guard.rhs, promql_parser.NumberLiteral) and guard.rhs.val == mins[key]
                and f"rate({series}" in "".join(guard.lhs.prettify().split()))

    for alert, (key, series) in guards.items():
        found = [r["expr"] for r in rules if r.get("alert") == alert]
        count = latency_count if alert == "MailroomRpcLatency" else 1
        bad = [e[-200:] for e in found if not guarded(e, key, series)]
        check(f"{alert}: quiet below prometheusRule.{key} (`and` rate of {series} > {mins[key]})" + (f" in each of its {count}" if count > 1 else ""),
              len(found) == count and not bad, str(bad)[:400] or f"{len(found)} rules")


check_alert_guards()

print(f"chart: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
