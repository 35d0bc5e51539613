"""Checks the Helm chart and the Tiltfile without a cluster.

- `helm lint --strict` (Helm's own Go SDK, via helm-python-sdk) with the dev values and with
  the smallest values an operator would pass to `helm install`;
- every rendered manifest validated against Kubernetes' schemas in strict mode
  (kubernetes-validate), CRDs of known operators excepted;
- installing without a database URL or signing key fails with a message saying what to set;
- the Tiltfile parses and calls what it should (starlark, with Tilt's functions stubbed).
Prints one line per check and `N passed, N failed` at the end.
"""
import sys

import helm_python as helm
import kubernetes_validate
import yaml

CHART = "charts/mailroom"
KUBE = "1.30.0"
KNOWN_CRD_GROUPS = ("monitoring.coreos.com/",)
passed, failed = 0, 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def render(values):
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    return chart.render(values, name="mailroom", namespace="mailroom", is_install=True)


minimal = {
    "secrets": {
        "databaseUrl": "postgres://mailroom:secret@db:5432/mailroom",
        "signingKey": "Ue4mGvf1yX1yq1mKZk8y0+2qHkJ7h4m0m3Jr9w0a1sQ=",
        "sealingKeys": "k1:bWFpbHJvb20tZGV2LXNlYWxpbmcta2V5LTMyYnl0ZXM=",
        "mailboxesClientSecret": "chart-check-client-secret",
    }
}
dev = yaml.safe_load(open("k8s/dev-values.yaml"))
everything = {**minimal, "serviceMonitor": {"enabled": True}}

for label, values in [("minimal install values", minimal), ("dev values", dev), ("service monitor on", everything)]:
    try:
        helm.lint(CHART, values, strict=True, kube_version=KUBE)
        check(f"helm lint --strict ({label})", True)
    except helm.HelmError as err:
        check(f"helm lint --strict ({label})", False, str(err))
        continue
    kinds = []
    deployments = {}
    for path, text in sorted(render(values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            kinds.append(doc["kind"])
            if doc["kind"] == "Deployment":
                deployments[doc["metadata"]["name"]] = doc
            if doc["apiVersion"].startswith(KNOWN_CRD_GROUPS):
                continue
            try:
                kubernetes_validate.validate(doc, KUBE, strict=True)
            except Exception as err:  # noqa: BLE001 - report every kind of schema failure
                check(f"{label}: {doc['kind']} {doc['metadata']['name']} is valid", False, str(err)[:300])
    check(f"{label}: renders Deployment, Service, PDB, migration Job, Secret",
          {"Deployment", "Service", "Job", "Secret"} <= set(kinds) and ("PodDisruptionBudget" in kinds) == (label != "dev values"),
          str(kinds))
    access = deployments.get("mailroom-access")
    env = {e["name"]: e.get("value") for e in access["spec"]["template"]["spec"]["containers"][0]["env"]} if access else {}
    check(f"{label}: access runs beside identity and finds identity's keys",
          set(deployments) == {"mailroom-identity", "mailroom-access", "mailroom-mailboxes"}
          and env.get("MAILROOM_ACCESS__IDENTITY_ENDPOINT") == "http://mailroom-identity:50051",
          f"{sorted(deployments)} {env.get('MAILROOM_ACCESS__IDENTITY_ENDPOINT')}")
    registry = deployments.get("mailroom-mailboxes")
    renv = {e["name"]: e for e in registry["spec"]["template"]["spec"]["containers"][0]["env"]} if registry else {}
    ienv = {e["name"]: e for e in deployments["mailroom-identity"]["spec"]["template"]["spec"]["containers"][0]["env"]} if "mailroom-identity" in deployments else {}
    check(f"{label}: the registry finds access and identity, its keys and credential come from the Secret, identity knows its credential",
          renv.get("MAILROOM_MAILBOXES__ACCESS_ENDPOINT", {}).get("value") == "http://mailroom-access:50055"
          and "secretKeyRef" in renv.get("MAILROOM_MAILBOXES__SEALING_KEYS", {}).get("valueFrom", {})
          and "secretKeyRef" in renv.get("MAILROOM_MAILBOXES__SERVICE_CLIENT_SECRET", {}).get("valueFrom", {})
          and "secretKeyRef" in ienv.get("MAILROOM_IDENTITY__SERVICE_CLIENTS__MAILBOXES", {}).get("valueFrom", {})
          and renv.get("MAILROOM_MAILBOXES__ALLOW_LOCAL_SERVERS", {}).get("value") == "false",
          str(sorted(renv)))
    if label == "service monitor on":
        check("ServiceMonitor rendered when enabled", "ServiceMonitor" in kinds, str(kinds))

for missing, words in [("databaseUrl", "secrets.databaseUrl"), ("signingKey", "mailroom keygen"), ("sealingKeys", "keygen --sealing"), ("mailboxesClientSecret", "mailboxesClientSecret")]:
    values = {"secrets": {k: v for k, v in minimal["secrets"].items() if k != missing}}
    try:
        render(values)
        check(f"install without {missing} is refused", False, "rendered anyway")
    except helm.HelmError as err:
        check(f"install without {missing} is refused with a way out", words in str(err), str(err)[:200])

try:
    render({**minimal, "services": {"identity": {"enabled": True, "grpcPort": 99999, "metricsPort": 9051}}})
    check("values.schema.json refuses a bad port", False, "accepted")
except helm.HelmError:
    check("values.schema.json refuses a bad port", True)

# The dev cluster's dependencies.
for doc in yaml.safe_load_all(open("k8s/dependencies.yaml")):
    try:
        kubernetes_validate.validate(doc, KUBE, strict=True)
        check(f"k8s/dependencies.yaml: {doc['kind']} {doc['metadata']['name']} is valid", True)
    except Exception as err:  # noqa: BLE001
        check(f"k8s/dependencies.yaml: {doc['kind']} {doc['metadata']['name']} is valid", False, str(err)[:300])

# The Tiltfile, run with Tilt's functions stubbed.
import starlark

calls = []
def stub(name):
    return lambda *a, **k: calls.append((name, a, k)) or []
module = starlark.Module()
for fn in ["k8s_yaml", "docker_build", "helm", "k8s_resource", "local_resource"]:
    module.add_callable(fn, stub(fn))
try:
    starlark.eval(module, starlark.parse("Tiltfile", open("Tiltfile").read(), starlark.Dialect.extended()), starlark.Globals.standard())
    names = [c[0] for c in calls]
    check("Tiltfile runs: dependencies, image, chart", {"k8s_yaml", "docker_build", "helm", "k8s_resource"} <= set(names), str(names))
except Exception as err:  # noqa: BLE001
    check("Tiltfile runs", False, str(err)[:300])

print(f"chart: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
