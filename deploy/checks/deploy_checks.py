"""Checks of the files in deploy/ that no schema alone covers.

Run by deploy/check inside its virtualenv (kubernetes-validate, PyYAML,
promql-parser):

    deploy_checks.py kubernetes RENDERED.yaml OVERLAY   # after kubectl kustomize
    deploy_checks.py env FILE...                        # GATEHOUSE_* names used exist
    deploy_checks.py metrics                            # alerts + dashboard vs exported metrics
    deploy_checks.py runbook                            # one runbook entry per alert

Each failure is printed as `FAIL <file>: <what>`; the exit status is 1 when
anything failed.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

failures: list[str] = []


def fail(where: str, what: str) -> None:
    failures.append(f"FAIL {where}: {what}")


# --- what Gatehouse exports and reads ----------------------------------------

# Metric name -> its labels (the management listener's /metrics). Histograms
# also export _bucket (with `le`), _sum and _count.
METRICS: dict[str, tuple[str, set[str]]] = {
    "gatehouse_build_info": ("gauge", {"version"}),
    "gatehouse_http_requests_total": ("counter", {"route", "method", "status"}),
    "gatehouse_http_request_duration_seconds": ("histogram", {"route", "method", "status"}),
    "gatehouse_tokens_issued_total": ("counter", {"tenant", "grant_type", "format"}),
    "gatehouse_oauth_errors_total": ("counter", {"endpoint", "error"}),
    "gatehouse_replays_detected_total": ("counter", {"tenant", "kind"}),
    "gatehouse_registrations_total": ("counter", {"tenant", "method", "outcome"}),
    "gatehouse_token_exchange_decisions_total": ("counter", {"tenant", "decision"}),
    "gatehouse_sign_ins_total": ("counter", {"tenant", "connector", "outcome"}),
    "gatehouse_upstream_requests_total": ("counter", {"connector", "outcome"}),
    "gatehouse_upstream_request_duration_seconds": ("histogram", {"connector"}),
    "gatehouse_db_query_duration_seconds": ("histogram", {"operation"}),
    "gatehouse_db_pool_connections": ("gauge", {"state"}),
    "gatehouse_db_pool_max_connections": ("gauge", set()),
    "gatehouse_revocation_listener_up": ("gauge", set()),
    "gatehouse_cache_requests_total": ("counter", {"cache", "result"}),
    "gatehouse_rate_limited_total": ("counter", {"limit"}),
    "gatehouse_security_events_total": ("counter", {"kind", "severity"}),
    "gatehouse_audit_queue_depth": ("gauge", set()),
    "gatehouse_audit_events_dropped_total": ("counter", set()),
    "gatehouse_audit_events_written_total": ("counter", set()),
}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# `up` is written by Prometheus for every scrape target, not by Gatehouse;
# it is the only way to see an instance that does not answer at all.
PROMETHEUS_SERIES = {"up": set()}


def series_labels(name: str) -> set[str] | None:
    """The labels a series of that name has, or None if Gatehouse does not export it."""
    if name in PROMETHEUS_SERIES:
        return PROMETHEUS_SERIES[name] | TARGET_LABELS
    if name in METRICS and METRICS[name][0] != "histogram":
        return METRICS[name][1] | TARGET_LABELS
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set())):
        base = name.removesuffix(suffix)
        if base != name and base in METRICS and METRICS[base][0] == "histogram":
            return METRICS[base][1] | extra | TARGET_LABELS
    return None


# Environment variables Gatehouse reads: what src/ names in a clap `env =`,
# an `env::var` call or a `&str` constant that names one.


def gatehouse_env_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "src").rglob("*.rs"):
        text = path.read_text()
        names.update(re.findall(r'env\s*=\s*"(GATEHOUSE_[A-Z0-9_]+)"', text))
        names.update(re.findall(r'env::var(?:_os)?\(\s*"(GATEHOUSE_[A-Z0-9_]+)"', text))
        names.update(re.findall(r'from_env\(\s*"(GATEHOUSE_[A-Z0-9_]+)"', text))
        names.update(re.findall(r'const\s+[A-Z0-9_]+\s*:\s*&str\s*=\s*"(GATEHOUSE_[A-Z0-9_]+)"', text))
    # Test-only settings are not for deployments.
    names.discard("GATEHOUSE_TEST_CLOCK_FILE")
    return names


def secret_env_names(config: Path) -> set[str]:
    """The `secret_env` names of a config file (client and connector secrets)."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "secret_env" and isinstance(value, str):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(tomllib.loads(config.read_text()))
    return found


# --- kubernetes ----------------------------------------------------------------

def check_kubernetes(rendered: Path, overlay: str) -> None:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    where = f"{rendered.name} ({overlay})"
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        fail(where, f"expected one Deployment, found {len(deployments)}")
        return
    dep = deployments[0]
    pod = dep["spec"]["template"]["spec"]
    check_pod_security(where + " Deployment", pod)
    container = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    env = {e["name"]: e for e in container.get("env", [])}
    check_env_known(where, env, container, overlay)

    # Probes on the management port, which must be the port the management
    # listener is told to bind.
    mgmt = env.get("GATEHOUSE_MANAGEMENT_LISTEN", {}).get("value", "")
    if not mgmt.endswith(f":{ports.get('management')}"):
        fail(where, f"GATEHOUSE_MANAGEMENT_LISTEN={mgmt!r} is not the `management` port {ports.get('management')}")
    listen = env.get("GATEHOUSE_LISTEN", {}).get("value", "")
    if not listen.endswith(f":{ports.get('http')}"):
        fail(where, f"GATEHOUSE_LISTEN={listen!r} is not the `http` port {ports.get('http')}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = container.get(probe, {}).get("httpGet", {})
        if get.get("port") != "management" or get.get("path") != path:
            fail(where, f"{probe} must GET {path} on the management port, has {get}")

    # Graceful shutdown: Gatehouse drains for up to 30 s after SIGTERM.
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pause = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < pause + 30:
        fail(where, f"terminationGracePeriodSeconds {grace} < preStop {pause} s + 30 s of draining")

    # The KEK and the database URL come from Secrets (or, in dev, from
    # nowhere: a generated development KEK and SQLite).
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    replicas = dep["spec"].get("replicas", 1)
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if overlay == "production" or overlay == "base":
        kek_file = env.get("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", {}).get("value", "")
        mount = next((m for m in mounts if kek_file.startswith(m + "/")), None)
        if not mount or "secret" not in volumes.get(mounts[mount], {}):
            fail(where, "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE must point into a mounted Secret")
        if "GATEHOUSE_KEY_ENCRYPTION_KEY" in env:
            fail(where, "the KEK belongs in the mounted Secret file, not in the environment")
        if replicas < 2 or any(h["spec"].get("minReplicas", 1) < 2 for h in hpas):
            fail(where, "needs at least 2 replicas (Deployment and autoscaler)")
        if not by_kind.get("PodDisruptionBudget"):
            fail(where, "has no PodDisruptionBudget")
        if not by_kind.get("Ingress") or not any(
            tls.get("secretName") for i in by_kind["Ingress"] for tls in i["spec"].get("tls", [])
        ):
            fail(where, "the Ingress must terminate TLS with a Secret")
    if overlay == "production":
        for name in ("GATEHOUSE_DATABASE_URL", "GATEHOUSE_REDIS_URL"):
            if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
                fail(where, f"{name} must come from a Secret")
        jobs = [j for j in by_kind.get("Job", []) if j["spec"]["template"]["spec"]["containers"][0].get("args") == ["migrate"]]
        if len(jobs) != 1:
            fail(where, "needs one Job running `gatehouse migrate`")
        for job in jobs:
            job_pod = job["spec"]["template"]["spec"]
            check_pod_security(where + " Job", job_pod)
            job_env = {e["name"]: e for e in job_pod["containers"][0].get("env", [])}
            # `migrate` reads no config file, so no secret_env either.
            check_env_known(where + " Job", job_env, job_pod["containers"][0], overlay, needs_config=False)
            if job_env.get("GATEHOUSE_DATABASE_URL") != env.get("GATEHOUSE_DATABASE_URL"):
                fail(where, "the migration Job must use the Deployment's GATEHOUSE_DATABASE_URL")
            if job_pod["containers"][0]["image"] != container["image"]:
                fail(where, "the migration Job must run the Deployment's image")
    if overlay == "dev":
        if replicas != 1 or hpas:
            fail(where, "dev runs one replica (SQLite) without an autoscaler")
        if not env.get("GATEHOUSE_DATABASE_URL", {}).get("value", "").startswith("sqlite:"):
            fail(where, "dev uses SQLite")

    # The config file comes from the ConfigMap and must be what the
    # container is told to read.
    config_path = env.get("GATEHOUSE_CONFIG", {}).get("value", "")
    cm_volume = volumes.get(mounts.get(str(Path(config_path).parent), ""), {})
    cm_name = cm_volume.get("configMap", {}).get("name")
    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    if cm_name not in config_maps or Path(config_path).name not in config_maps[cm_name].get("data", {}):
        fail(where, f"GATEHOUSE_CONFIG={config_path!r} is not a file of a ConfigMap in the output")
    else:
        try:
            tomllib.loads(config_maps[cm_name]["data"][Path(config_path).name])
        except tomllib.TOMLDecodeError as e:
            fail(where, f"config file is not TOML: {e}")

    check_service_and_monitor(where, by_kind, dep, ports)
    check_network_policy(where, by_kind, ports)


def check_pod_security(where: str, pod: dict) -> None:
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        fail(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken must be false")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(where, f"container {c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(where, f"container {c['name']}: readOnlyRootFilesystem must be true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            fail(where, f"container {c['name']}: must drop ALL capabilities and add none")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fail(where, f"container {c['name']}: no {kind}.{r}")


def check_env_known(where: str, env: dict, container: dict, overlay: str, needs_config: bool = True) -> None:
    known = gatehouse_env_names()
    config = DEPLOY / "kubernetes" / ("base" if overlay == "base" else f"overlays/{overlay}") / "gatehouse.toml"
    secrets = secret_env_names(config)
    for name in env:
        if name.startswith("OTEL_"):
            continue
        if name not in known and name not in secrets:
            fail(where, f"environment variable {name} is not one Gatehouse reads")
    # secret_env names must reach the container (an env entry or envFrom).
    if needs_config and secrets - set(env) and not container.get("envFrom"):
        fail(where, f"secret_env {sorted(secrets - set(env))} of {config.relative_to(REPO)} are not in the environment")


def check_service_and_monitor(where: str, by_kind: dict, dep: dict, ports: dict) -> None:
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    services = by_kind.get("Service", [])
    if len(services) != 1:
        fail(where, "expected one Service")
        return
    svc = services[0]
    if any(pod_labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        fail(where, "the Service does not select the Deployment's pods")
    svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for name in ("http", "management"):
        if svc_ports.get(name, {}).get("targetPort") not in (name, ports.get(name)):
            fail(where, f"the Service has no `{name}` port to the container's")
    # ServiceMonitor: kubernetes-validate ships schemas for Kubernetes' own
    # kinds only, and the project does not vendor the Prometheus Operator's
    # CRD schema, so its fields and meaning are checked here: it selects the
    # Service and scrapes /metrics on the management port.
    for sm in by_kind.get("ServiceMonitor", []):
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            fail(where, f"ServiceMonitor apiVersion {sm['apiVersion']}")
        allowed = {"apiVersion", "kind", "metadata", "spec"}
        if set(sm) - allowed or set(sm["spec"]) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}:
            fail(where, "ServiceMonitor has unexpected fields")
        match = sm["spec"].get("selector", {}).get("matchLabels", {})
        if not match or any(svc["metadata"].get("labels", {}).get(k) != v for k, v in match.items()):
            fail(where, "the ServiceMonitor does not select the Service")
        endpoints = sm["spec"].get("endpoints", [])
        if not endpoints or any(e.get("port") != "management" or e.get("path") != "/metrics" for e in endpoints):
            fail(where, "the ServiceMonitor must scrape /metrics on the `management` port")
        for e in endpoints:
            unknown = set(e) - {"port", "path", "interval", "scrapeTimeout", "scheme"}
            if unknown:
                fail(where, f"ServiceMonitor endpoint has unexpected fields {sorted(unknown)}")


def check_network_policy(where: str, by_kind: dict, ports: dict) -> None:
    policies = by_kind.get("NetworkPolicy", [])
    if len(policies) != 1:
        fail(where, "expected one NetworkPolicy")
        return
    spec = policies[0]["spec"]
    if sorted(spec.get("policyTypes", [])) != ["Egress", "Ingress"]:
        fail(where, "the NetworkPolicy must restrict both Ingress and Egress")
    for rule in spec.get("ingress", []):
        rule_ports = {p.get("port") for p in rule.get("ports", [])}
        if not rule_ports or not rule.get("from"):
            fail(where, "every ingress rule must name its ports and its sources")
        if "management" in rule_ports or ports.get("management") in rule_ports:
            namespaces = [f.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for f in rule["from"]]
            if namespaces != ["monitoring"] or len(rule_ports) != 1:
                fail(where, "the management port may be reached from the monitoring namespace only")
        elif rule_ports != {"http"}:
            fail(where, f"ingress to unexpected ports {rule_ports}")
    egress_ports = {p.get("port") for r in spec.get("egress", []) for p in r.get("ports", [])}
    for needed in (53, 5432, 6379, 443):
        if needed not in egress_ports:
            fail(where, f"egress to port {needed} is not allowed")


# --- environment names in other deploy files ------------------------------------

def check_env_files(paths: list[str]) -> None:
    known = gatehouse_env_names()
    local_secrets = secret_env_names(DEPLOY / "local" / "gatehouse.toml")
    example_secrets = secret_env_names(REPO / "config" / "production.example.toml")
    for p in paths:
        path = Path(p)
        names = set(re.findall(r"\b(GATEHOUSE_[A-Z0-9_]+)=", path.read_text()))
        # deploy/local/up's own settings.
        names = {n for n in names if not n.startswith("GATEHOUSE_LOCAL_") or n in local_secrets}
        if not names:
            fail(p, "names no GATEHOUSE_ variable (checked the wrong file?)")
        for name in sorted(names - known - local_secrets - example_secrets):
            fail(p, f"sets {name}, which Gatehouse does not read")


# --- metrics -----------------------------------------------------------------------

def promql_parse(expr: str):
    import promql_parser

    return promql_parser.parse(expr)


def selectors(expr: str) -> list[tuple[str | None, list[str]]]:
    import promql_parser

    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            found.append((node.name, [m.name for m in node.matchers.matchers]))
        return True

    promql_parser.walk(promql_parse(expr), visit)
    return found


def grouping_labels(expr: str) -> list[str]:
    """Label names in `by (...)`/`on (...)`/`ignoring (...)`/`without (...)` clauses."""
    out = []
    for clause in re.findall(r"\b(?:by|on|ignoring|without|group_left|group_right)\s*\(([^)]*)\)", expr):
        out.extend(x.strip() for x in clause.split(",") if x.strip())
    return out


def check_expr(where: str, expr: str) -> set[str]:
    try:
        found = selectors(expr)
    except ValueError as e:
        fail(where, f"PromQL does not parse: {e}: {expr}")
        return set()
    names = set()
    all_labels: set[str] = set()
    for name, matchers in found:
        if name is None:
            fail(where, f"selector without a metric name in {expr}")
            continue
        labels = series_labels(name)
        if labels is None:
            fail(where, f"metric {name} is not exported by Gatehouse")
            continue
        names.add(name)
        all_labels |= labels
        for m in matchers:
            if m != "__name__" and m not in labels:
                fail(where, f"{name} has no label {m!r}")
    for label in grouping_labels(expr):
        if label not in all_labels:
            fail(where, f"groups by label {label!r}, which none of its metrics has: {expr}")
    return names


def grafana_expr(expr: str) -> str:
    """Grafana's variables replaced by values PromQL can parse."""
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def check_metrics() -> None:
    alerts_path = DEPLOY / "prometheus" / "alerts.yml"
    rules = yaml.safe_load(alerts_path.read_text())
    used: set[str] = set()
    alert_names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            alert_names.append(name)
            used |= check_expr(f"{alerts_path.name} {name}", rule["expr"])
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                fail(f"{alerts_path.name} {name}", "severity must be critical, warning or info")
            for key in ("summary", "description", "runbook_url"):
                if not rule.get("annotations", {}).get(key):
                    fail(f"{alerts_path.name} {name}", f"no {key} annotation")
    if len(alert_names) != len(set(alert_names)):
        fail(alerts_path.name, "duplicate alert names")

    tests_path = DEPLOY / "prometheus" / "alerts.test.yml"
    tests = yaml.safe_load(tests_path.read_text())
    tested = {
        t["alertname"]
        for test in tests["tests"]
        for t in test.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    for name in alert_names:
        if name not in tested:
            fail(tests_path.name, f"no test in which {name} fires")

    dash_path = DEPLOY / "grafana" / "gatehouse.json"
    dash = json.loads(dash_path.read_text())
    panels = []
    for p in dash["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p["id"] for p in panels]
    if len(ids) != len(set(ids)):
        fail(dash_path.name, "duplicate panel ids")
    for p in panels:
        for t in p.get("targets", []):
            used |= check_expr(f"{dash_path.name} panel {p['title']!r}", grafana_expr(t["expr"]))
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
        if var["type"] == "query":
            if not m:
                fail(dash_path.name, f"variable {var['name']}: unexpected query {q}")
            else:
                used |= check_expr(f"{dash_path.name} variable {var['name']}", grafana_expr(m.group(1)))
                labels = set()
                for name, _ in selectors(grafana_expr(m.group(1))):
                    labels |= series_labels(name) or set()
                if m.group(2) not in labels:
                    fail(dash_path.name, f"variable {var['name']}: {m.group(1)} has no label {m.group(2)}")
    unused = {n for n in METRICS} - {n.removesuffix("_bucket") for n in used}
    if unused:
        fail(dash_path.name, f"metrics shown nowhere: {sorted(unused)}")
    if not failures:
        print(f"metrics: {len(alert_names)} alerts and {len(panels)} dashboard panels use only exported metrics and labels")


def check_runbook() -> None:
    ops = (REPO / "docs" / "operations.md").read_text()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    headings = set(re.findall(r"^#{3,4} (Gatehouse\w+)\s*$", ops, re.M))
    names = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for name in names:
        if name not in headings:
            fail("docs/operations.md", f"no runbook section `#### {name}`")
        for g in rules["groups"]:
            for r in g["rules"]:
                if r.get("alert") == name and r["annotations"].get("runbook_url") != f"docs/operations.md#{name.lower()}":
                    fail("alerts.yml", f"{name}: runbook_url must be docs/operations.md#{name.lower()}")
    for heading in headings - set(names):
        fail("docs/operations.md", f"runbook section {heading} has no alert")
    if not failures:
        print(f"runbook: {len(names)} alerts, each with its section in docs/operations.md")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "kubernetes":
        check_kubernetes(Path(args[0]), args[1])
    elif cmd == "env":
        check_env_files(args)
    elif cmd == "metrics":
        check_metrics()
    elif cmd == "runbook":
        check_runbook()
    else:
        print(__doc__)
        return 2
    for f in failures:
        print(f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
