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
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/")
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
    else:
        check(f"{name}: a known operator kind", False)


for label, values in VALUE_SETS:
    for kube in KUBE_VERSIONS:
        try:
            helm.lint(CHART, values, strict=True, kube_version=kube)
            check(f"helm lint --strict ({label}, Kubernetes {kube})", True)
        except helm.HelmError as err:
            check(f"helm lint --strict ({label}, Kubernetes {kube})", False, str(err)[:400])
    try:
        docs = objects(values)
    except helm.HelmError as err:
        check(f"{label}: renders", False, str(err)[:400])
        continue
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
    check(f"{label}: {len(docs)} objects valid in strict mode on Kubernetes {' and '.join(KUBE_VERSIONS)}", not invalid, "; ".join(invalid))

    kinds = [d["kind"] for d in docs]
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    by_kind = lambda k: {d["metadata"]["name"] for d in docs if d["kind"] == k}  # noqa: E731
    monolith = label.startswith("monolith")
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
    check(f"{label}: a ServiceAccount per Deployment", by_kind("ServiceAccount") == set(deployments), str(by_kind("ServiceAccount")))
    if values.get("networkPolicy", {}).get("enabled", True):
        check(f"{label}: a NetworkPolicy per Deployment", by_kind("NetworkPolicy") == set(deployments), str(by_kind("NetworkPolicy")))
    if values.get("podDisruptionBudget", {}).get("enabled", True):
        check(f"{label}: a PodDisruptionBudget per Deployment", by_kind("PodDisruptionBudget") == set(deployments))
    hardened = []
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        sc = c.get("securityContext", {})
        if not (pod["securityContext"].get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                and sc.get("allowPrivilegeEscalation") is False
                and (c.get("readinessProbe", {}).get("grpc") or (name == "mailroom-web" and c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/healthz"))
                and (c.get("livenessProbe", {}).get("grpc") or (name == "mailroom-web" and c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/livez"))
                and pod.get("serviceAccountName") == name):
            hardened.append(name)
    check(f"{label}: every Deployment non-root, read-only root, no privilege escalation, gRPC probes (the console: HTTP), own ServiceAccount", not hardened, str(hardened))
    if web_on:
        wenv = env_of(deployments["mailroom-web"])
        wpolicy = next((d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "mailroom-web"), None)
        if wpolicy:
            wports = sorted(p["port"] for r in wpolicy["spec"]["egress"] for p in r.get("ports", []) if not r.get("to") and p["port"] != 53)
            check(f"{label}: the console reaches Redis but not the database or the broker", wports == [6379], str(wports))
        check(f"{label}: the console holds no database URL, mailbox sealing key or service credential",
              "secretKeyRef" not in json.dumps(wenv.get("DATABASE_URL", {}))
              and not any("SEALING" in json.dumps(e) or "CLIENT_SECRET" in json.dumps(e) for e in wenv.values()), str(sorted(wenv)))
        check(f"{label}: the console calls the five services' headless Services, seals sessions with a key from the Secret, knows its public URL",
              all(wenv.get(f"MAILROOM_WEB__{n.upper()}_ENDPOINT", {}).get("value", "").startswith(f"http://mailroom-{n}-peers:") for n in SERVICES)
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
              env["MAILROOM_INVITATIONS__IDENTITY_ENDPOINT"]["value"] == "http://mailroom-identity-peers:50051"
              and env["MAILROOM_INVITATIONS__ACCESS_ENDPOINT"]["value"] == "http://mailroom-access-peers:50055"
              and senv["MAILROOM_SYNC__MAILBOXES_ENDPOINT"]["value"] == "http://mailroom-mailboxes-peers:50053"
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
                ok = (names == ["mailroom_sync_due_mailboxes", "mailroom_sync_idle_connections"]
                      and spec["maxReplicas"] <= 8 and spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300)
            check(f"{label}: the sync workers scaled by a {want} on activity, slow to scale down, replicas left to it", ok, str(scaler)[:300])
        policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
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
    ("more workers than partitions", merge(minimal, {"services": {"sync": {"worker": {"autoscaling": {"maxReplicas": 20}}}}}), "kafkaPartitions"),
    ("more workers than partitions under KEDA", merge(minimal, {"keda": {"enabled": True}, "config": {"kafkaPartitions": 4}}), "kafkaPartitions"),
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

print(f"chart: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
