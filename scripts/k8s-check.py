#!/usr/bin/env python3
"""The checks of scripts/validate-k8s.sh that need more than a schema.

    k8s-check.py check OVERLAY_DIR RENDERED CORE_OUT RULES_OUT
        RENDERED is `kubectl kustomize OVERLAY_DIR`. Writes Kubernetes' own
        kinds to CORE_OUT (for kubernetes-validate) and the PrometheusRule's
        groups to RULES_OUT (for promtool), validates the Prometheus
        Operator kinds against scripts/k8s-crds/, and checks every Pod
        template against Pod Security "restricted" and weir's own
        requirements (probes, drain timing, workers, token, NetworkPolicy,
        PodMonitor, alerts in sync with config/alerts.yml). Prints what it
        checked; exits 1 naming each object and field that fails.

    k8s-check.py sync-alerts
        Rewrites config/k8s/base/prometheusrule.yaml from config/alerts.yml.
"""

import copy
import json
import os
import re
import sys
import tomllib

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "config", "alerts.yml")
RULE_FILE = os.path.join(ROOT, "config", "k8s", "base", "prometheusrule.yaml")
CRDS = os.path.join(ROOT, "scripts", "k8s-crds")

CUSTOM_GROUP = "monitoring.coreos.com/"
CUSTOM_SCHEMAS = {"PodMonitor": "podmonitor.v1.schema.json", "PrometheusRule": "prometheusrule.v1.schema.json"}
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}
# Pod Security "restricted": the volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}
WEIR = "weir"
ADMIN_PORT = 9901


class Failures:
    def __init__(self):
        self.items = []

    def __call__(self, where, what):
        self.items.append(f"{where}: {what}")


def ident(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def workspace_version():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def duration(text):
    """Seconds in one of weir's durations ("250ms", "5s", "2m", "1h")."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def strict(schema):
    """The schema rejecting properties it does not name (as kubernetes-validate
    --strict does for Kubernetes' own kinds), except where the CRD keeps
    unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k not in ("properties", "enum", "required") else v for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {name: strict(s) for name, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    return out


def matches(selector, labels):
    """Whether matchLabels selects these labels (matchExpressions unused here)."""
    if not selector or set(selector) - {"matchLabels"}:
        return False
    want = selector.get("matchLabels") or {}
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def pod_templates(objs):
    for o in objs:
        if o["kind"] in POD_TEMPLATE_KINDS:
            yield o, o["spec"]["template"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]
        elif o["kind"] == "Pod":
            yield o, o


def all_containers(spec):
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or []:
            yield field, c


def check_restricted(o, spec, fail):
    """Pod Security "restricted" (and this repo's rules on top: both levels
    set, pinned images, requests and limits) for one Pod template."""
    where = ident(o)
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            fail(where, f"spec.{host} is true")
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "spec.automountServiceAccountToken must be false (nothing here talks to the Kubernetes API)")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        fail(where, "spec.securityContext.runAsNonRoot must be true")
    if psc.get("runAsUser") == 0:
        fail(where, "spec.securityContext.runAsUser must not be 0")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        fail(where, "spec.securityContext.seccompProfile.type must be RuntimeDefault")
    if psc.get("sysctls"):
        fail(where, "spec.securityContext.sysctls: set none")
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            fail(where, f"volume {v.get('name')}: type {sorted(kinds - RESTRICTED_VOLUMES)} not allowed by restricted")
    for field, c in all_containers(spec):
        cw = f"{where} container {c['name']} ({field})"
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot") is not True:
            fail(cw, "securityContext.runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            fail(cw, "securityContext.runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            fail(cw, "securityContext.privileged is true")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            fail(cw, "securityContext.capabilities.drop must contain ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            fail(cw, f"securityContext.capabilities.add {caps['add']}: only NET_BIND_SERVICE is allowed")
        if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            fail(cw, "securityContext.seccompProfile.type must be RuntimeDefault")
        if sc.get("procMount", "Default") != "Default":
            fail(cw, "securityContext.procMount must be Default")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                fail(cw, f"port {p.get('name')}: hostPort is set")
        image = c.get("image", "")
        last = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in last or last.endswith(":latest")):
            fail(cw, f"image {image!r} is not pinned (a tag other than latest, or a digest)")
        if c.get("imagePullPolicy") != "IfNotPresent":
            fail(cw, f"imagePullPolicy is {c.get('imagePullPolicy')!r}, want IfNotPresent")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    fail(cw, f"resources.{kind}.{r} is not set")


def named_port(container, port):
    for p in container.get("ports") or []:
        if port in (p.get("name"), p.get("containerPort")):
            return p["containerPort"]
    return None


def check_weir(o, spec, objs, overlay, fail):
    """weir's own container: image, workers, probes, drain timing, config and token."""
    where = ident(o)
    w = next((c for c in spec.get("containers") or [] if c["name"] == WEIR), None)
    if w is None:
        return None
    cw = f"{where} container weir"
    version = workspace_version()
    if w.get("image") != f"ghcr.io/example/weir:{version}":
        fail(cw, f"image {w.get('image')!r}, want ghcr.io/example/weir:{version} (the workspace version)")
    if (w.get("securityContext") or {}).get("readOnlyRootFilesystem") is not True:
        fail(cw, "securityContext.readOnlyRootFilesystem must be true")
    env = {e["name"]: e for e in w.get("env") or []}
    ref = (env.get("WEIR_WORKERS", {}).get("valueFrom") or {}).get("resourceFieldRef") or {}
    if (ref.get("containerName"), ref.get("resource"), str(ref.get("divisor"))) != (WEIR, "limits.cpu", "1"):
        fail(cw, f"env WEIR_WORKERS must come from resourceFieldRef weir limits.cpu divisor 1, is {env.get('WEIR_WORKERS')}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (w.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or named_port(w, get.get("port")) != ADMIN_PORT:
            fail(cw, f"{probe} must be GET {path} on the admin port {ADMIN_PORT}, is {get}")
    if named_port(w, "http") != 8080:
        fail(cw, "no port named http (8080)")

    mounts = {m["mountPath"]: m for m in w.get("volumeMounts") or []}
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    cfg_mount = mounts.get("/etc/weir")
    cfg_volume = volumes.get((cfg_mount or {}).get("name"), {})
    cm_name = (cfg_volume.get("configMap") or {}).get("name")
    cm = next((x for x in objs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == cm_name), None)
    if cm is None or not (cfg_mount or {}).get("readOnly"):
        fail(cw, f"/etc/weir must be a read-only mount of a ConfigMap of this overlay (volume {cfg_volume})")
        return None
    text = cm.get("data", {}).get("weir.toml")
    with open(os.path.join(overlay, "weir.toml")) as f:
        if text != f.read():
            fail(ident(cm), f"data weir.toml differs from {os.path.join(overlay, 'weir.toml')} (configMapGenerator files:)")
    cfg = tomllib.loads(text or "")

    timeouts = cfg.get("timeouts", {})
    drain = duration(timeouts.get("drain_delay", "0s"))
    grace = duration(timeouts.get("shutdown_grace", "30s"))
    period = spec.get("terminationGracePeriodSeconds", 30)
    if drain <= 0:
        fail(ident(cm), "weir.toml: timeouts.drain_delay is not set (endpoints need time to drop the pod)")
    if not period > drain + grace:
        fail(where, f"terminationGracePeriodSeconds {period} must exceed drain_delay + shutdown_grace ({drain:g} + {grace:g} s)")
    for c in spec.get("containers") or []:
        if c["name"] == WEIR and ((c.get("lifecycle") or {}).get("preStop")):
            fail(cw, "lifecycle.preStop: weir drains by itself (timeouts.drain_delay)")

    token_file = cfg.get("admin", {}).get("token_file")
    if not token_file:
        fail(ident(cm), "weir.toml: admin.token_file is not set")
    else:
        tm = mounts.get(os.path.dirname(token_file))
        tv = volumes.get((tm or {}).get("name"), {})
        if not tm or not tm.get("readOnly") or "secret" not in tv:
            fail(cw, f"{os.path.dirname(token_file)} (admin.token_file's directory) must be a read-only Secret mount")
    for path, m in mounts.items():
        if path != "/var/lib/weir" and not m.get("readOnly"):
            fail(cw, f"volumeMount {path} is writable; only /var/lib/weir should be")
    return cfg, w


def check_policy(weir_pods, objs, fail):
    """PDB, NetworkPolicy, Services, PodMonitor for the Pods that run weir."""
    for o, tpl in weir_pods:
        labels = tpl["metadata"].get("labels") or {}
        w = next(c for c in tpl["spec"]["containers"] if c["name"] == WEIR)
        where = ident(o)
        if not any(x["kind"] == "PodDisruptionBudget" and matches(x["spec"].get("selector"), labels) for x in objs):
            fail(where, "no PodDisruptionBudget selects its pods")
        pols = [x for x in objs if x["kind"] == "NetworkPolicy" and matches(x["spec"].get("podSelector"), labels)]
        if not pols:
            fail(where, "no NetworkPolicy selects its pods")
        data_open = False
        for p in pols:
            pw = ident(p)
            if "Ingress" not in (p["spec"].get("policyTypes") or []):
                fail(pw, "policyTypes must contain Ingress")
            for i, rule in enumerate(p["spec"].get("ingress") or []):
                ports = [named_port(w, x.get("port")) for x in rule.get("ports") or []]
                if not rule.get("ports"):
                    fail(pw, f"ingress[{i}] has no ports: it opens the admin port too")
                if ADMIN_PORT in ports:
                    peers = rule.get("from") or []
                    if not peers or any("ipBlock" in peer or "podSelector" not in peer for peer in peers):
                        fail(pw, f"ingress[{i}] opens the admin port {ADMIN_PORT} beyond selected pods: {peers}")
                    for peer in peers:
                        if (peer.get("podSelector") or {}).get("matchLabels", {}).get("app.kubernetes.io/name") != "prometheus":
                            fail(pw, f"ingress[{i}] admits {peer} to the admin port; only Prometheus should be")
                if 8080 in ports and not rule.get("from"):
                    data_open = True
        if pols and not data_open:
            fail(where, "no NetworkPolicy rule opens the data port (8080) to everyone")
        pms = [x for x in objs if x["kind"] == "PodMonitor" and matches(x["spec"].get("selector"), labels)]
        if not pms:
            fail(where, "no PodMonitor selects its pods")
        for pm in pms:
            for i, ep in enumerate(pm["spec"].get("podMetricsEndpoints") or []):
                if named_port(w, ep.get("port")) != ADMIN_PORT or ep.get("path") != "/metrics":
                    fail(ident(pm), f"podMetricsEndpoints[{i}] must scrape /metrics on port weir-admin ({ADMIN_PORT})")
            if labels.get(pm["spec"].get("jobLabel", "")) != "weir":
                fail(ident(pm), "jobLabel must give job=\"weir\" (config/alerts.yml selects it)")
    # Every Service selects some pod and targets one of its named ports.
    for s in (x for x in objs if x["kind"] == "Service"):
        sel = {"matchLabels": s["spec"].get("selector") or {}}
        pods = [t for _, t in pod_templates(objs) if matches(sel, t["metadata"].get("labels") or {})]
        if not pods:
            fail(ident(s), f"selector {sel['matchLabels']} matches no Pod template")
        for p in s["spec"].get("ports") or []:
            target = p.get("targetPort", p.get("port"))
            if pods and not any(named_port(c, target) for t in pods for c in t["spec"]["containers"]):
                fail(ident(s), f"port {p.get('name')}: targetPort {target} is no container port of its pods")


def check_custom(obj, fail):
    where = ident(obj)
    if obj.get("apiVersion") != "monitoring.coreos.com/v1" or obj["kind"] not in CUSTOM_SCHEMAS:
        fail(where, f"{obj.get('apiVersion')} {obj['kind']}: no schema to validate it against")
        return
    with open(os.path.join(CRDS, CUSTOM_SCHEMAS[obj["kind"]])) as f:
        schema = strict(json.load(f))
    schema.pop("x-source", None)
    body = copy.deepcopy(obj)
    meta = body.pop("metadata", {})
    v = jsonschema.Draft7Validator(schema)
    for e in sorted(v.iter_errors(body), key=lambda e: list(e.absolute_path)):
        fail(where, f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", str(meta.get("name", ""))):
        fail(where, f"metadata.name {meta.get('name')!r} is not a DNS subdomain")
    for field in ("labels", "annotations"):
        for k, val in (meta.get(field) or {}).items():
            if not isinstance(val, str):
                fail(where, f"metadata.{field}.{k} is not a string")


def alerts_groups():
    with open(ALERTS) as f:
        return yaml.safe_load(f)["groups"]


def check(overlay, rendered, core_out, rules_out):
    fail = Failures()
    with open(rendered) as f:
        objs = [d for d in yaml.safe_load_all(f) if d]
    core = [o for o in objs if not o.get("apiVersion", "").startswith(CUSTOM_GROUP)]
    custom = [o for o in objs if o.get("apiVersion", "").startswith(CUSTOM_GROUP)]
    with open(core_out, "w") as f:
        yaml.safe_dump_all(core, f, sort_keys=False)
    name = os.path.basename(os.path.normpath(overlay))
    print(f"{name}: {len(objs)} objects: {', '.join(ident(o) for o in objs)}")

    for o in custom:
        check_custom(o, fail)
    rules = [o for o in custom if o["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        fail(name, f"{len(rules)} PrometheusRule objects, want 1")
    else:
        if rules[0]["spec"].get("groups") != alerts_groups():
            fail(ident(rules[0]), "spec.groups differ from config/alerts.yml's groups: run scripts/k8s-check.py sync-alerts")
        with open(rules_out, "w") as f:
            yaml.safe_dump({"groups": rules[0]["spec"].get("groups")}, f, sort_keys=False)
    print(f"{name}: {', '.join(ident(o) for o in custom)} valid against scripts/k8s-crds/ (strict)")

    weir_pods = []
    for o, tpl in pod_templates(objs):
        spec = tpl["spec"]
        check_restricted(o, spec, fail)
        got = check_weir(o, spec, objs, overlay, fail)
        if got:
            weir_pods.append((o, tpl))
        names = ", ".join(c["name"] for _, c in all_containers(spec))
        print(f"{name}: {ident(o)} ({names}): Pod Security restricted fields, pinned images, requests and limits"
              + ("; weir: probes, WEIR_WORKERS, drain timing, config, token" if got else ""))
    if not weir_pods:
        fail(name, "no Pod template runs a container named weir")
    check_policy(weir_pods, objs, fail)
    print(f"{name}: PodDisruptionBudget, NetworkPolicy (admin port: Prometheus only), PodMonitor, Service ports")

    for item in fail.items:
        print(f"FAIL {name}: {item}", file=sys.stderr)
    return 1 if fail.items else 0


def sync_alerts():
    with open(ALERTS) as f:
        text = f.read()
    body = text[text.index("\ngroups:") + 1:]
    header = (
        "# config/alerts.yml's rules as a Prometheus Operator PrometheusRule. Generated:\n"
        "# edit config/alerts.yml, then run scripts/k8s-check.py sync-alerts\n"
        "# (scripts/validate-k8s.sh fails while the two differ).\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: weir\n"
        "spec:\n"
    )
    out = header + "".join(f"  {line}" if line.strip() else line for line in body.splitlines(keepends=True))
    with open(RULE_FILE, "w") as f:
        f.write(out)
    with open(RULE_FILE) as f:
        assert yaml.safe_load(f)["spec"]["groups"] == alerts_groups()
    print(f"wrote {os.path.relpath(RULE_FILE, ROOT)} from config/alerts.yml")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["check"] and len(args) == 5:
        sys.exit(check(*args[1:]))
    if args == ["sync-alerts"]:
        sys.exit(sync_alerts())
    sys.exit(__doc__)
