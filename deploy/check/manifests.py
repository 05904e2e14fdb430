#!/usr/bin/env python3
"""Assertions over a rendered overlay of deploy/k8s (`kubectl kustomize … | manifests.py MODE`).

MODE is `sqlite` or `postgres`. Reads the rendered YAML on stdin (or from the file given
after MODE), checks what a deploy of fintoc-refresh must get right, prints one line per
check and `manifests: N passed, N failed`, and exits 1 if any check failed.

What is checked, and why:
- liveness is `GET /healthz` and nothing else: /healthz never touches the database, so a
  database outage makes replicas unready instead of restarting all of them;
- readiness is `GET /readyz` or the gRPC health service, on the ports the service listens on;
- GRPC_ADDR / HTTP_ADDR listen on every interface (the flags default to loopback, which no
  probe or Service reaches) on the container's declared ports;
- terminationGracePeriodSeconds > preStop wait + DRAIN_DELAY + SHUTDOWN_GRACE, a preStop
  wait exists, and DRAIN_DELAY < SHUTDOWN_GRACE (serve refuses the opposite);
- secrets reach the container only through `valueFrom.secretKeyRef`, never as a literal, a
  ConfigMap entry or `envFrom` of a whole Secret; FINTOC_SECRET_KEY and
  FINTOC_WEBHOOK_SECRET are required (not optional); no Secret is rendered at all (the
  operator creates it); no ConfigMap value looks like a secret;
- non-root: runAsNonRoot, a numeric non-zero UID, read-only root filesystem, no privilege
  escalation, every capability dropped; the image pinned by a tag other than `latest`;
- sqlite: one replica, `Recreate` (never two pods on one SQLite file), DATABASE_URL a path
  on a mounted PersistentVolumeClaim that the overlay renders, no autoscaler;
- postgres: two replicas or more, RollingUpdate with maxUnavailable 0, a PodDisruptionBudget
  selecting the pods that still lets one go, DATABASE_URL from the Secret.
"""

import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - the message is the point
    sys.exit(
        "manifests.py needs PyYAML: run deploy/check/run.sh (it installs it), or "
        "`pip install pyyaml`, or point DEPLOY_CHECK_PYTHON at a python that has it"
    )

# Environment variables that carry secrets (README, Configuration: the "(secret)" rows, and
# the database URLs, which may hold a password).
SECRET_ENV = [
    "FINTOC_SECRET_KEY",
    "FINTOC_WEBHOOK_SECRET",
    "LINK_TOKEN_KEYS",
    "GRPC_BEARER_TOKENS",
    "DATABASE_URL",
    "DATABASE_DIRECT_URL",
]
REQUIRED_SECRETS = ["FINTOC_SECRET_KEY", "FINTOC_WEBHOOK_SECRET"]
# What a secret value looks like: Fintoc keys, webhook secrets, link token keys, a URL with
# a password.
SECRET_LOOKING = re.compile(
    r"(sk_(live|test)_|whsec_|^[A-Za-z0-9_-]+:[A-Za-z0-9+/]{40,}={0,2}$|://[^/@\s:]+:[^/@\s]+@)"
)
# The service's documented defaults (README, Configuration).
DEFAULTS = {
    "GRPC_ADDR": "127.0.0.1:50051",
    "HTTP_ADDR": "127.0.0.1:8080",
    "DATABASE_URL": "fintoc-refresh.db",
    "DRAIN_DELAY": "0s",
    "SHUTDOWN_GRACE": "10s",
}
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(text):
    """A duration as the service writes it (`500ms`, `30s`, `1m30s`), in seconds."""
    text = str(text).strip()
    parts = DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * UNIT_SECONDS[u] for n, u in parts)


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}")
        return ok


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("sqlite", "postgres"):
        sys.exit("usage: manifests.py sqlite|postgres [rendered.yaml]  (YAML on stdin without a file)")
    mode = sys.argv[1]
    text = open(sys.argv[2]).read() if len(sys.argv) == 3 else sys.stdin.read()
    docs = [d for d in yaml.safe_load_all(text) if d]
    c = Checks()

    deployments = of_kind(docs, "Deployment")
    if not c.check(len(deployments) == 1, f"one Deployment (found {len(deployments)})"):
        return c
    deployment = deployments[0]
    spec = deployment.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {}) or {}
    configmaps = {cm["metadata"]["name"]: cm.get("data", {}) or {} for cm in of_kind(docs, "ConfigMap")}
    containers = pod.get("containers", [])
    c.check(len(containers) >= 1, "the pod has a container")
    c.check(not of_kind(docs, "Secret"), "no Secret is rendered (the operator creates it)")

    for name, data in configmaps.items():
        for key, value in data.items():
            secret_key = key in SECRET_ENV and not (key == "DATABASE_URL" and "://" not in str(value))
            c.check(
                not secret_key and not SECRET_LOOKING.search(str(value)),
                f"ConfigMap {name}: {key} is not a secret",
            )

    pod_sc = pod.get("securityContext", {}) or {}
    for container in containers:
        cname = container.get("name")
        # The container's environment as the kubelet builds it: envFrom first, env over it.
        env, origin = {}, {}
        for source in container.get("envFrom", []) or []:
            c.check("secretRef" not in source, f"{cname}: no envFrom secretRef (each secret by secretKeyRef)")
            ref = source.get("configMapRef")
            if ref:
                data = configmaps.get(ref["name"])
                c.check(data is not None, f"{cname}: envFrom ConfigMap {ref['name']} is rendered")
                for key, value in (data or {}).items():
                    env[source.get("prefix", "") + key] = str(value)
                    origin[source.get("prefix", "") + key] = "configmap"
        for var in container.get("env", []) or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
                origin[var["name"]] = "value"
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                env[var["name"]] = None
                origin[var["name"]] = "optional-secret" if var["valueFrom"]["secretKeyRef"].get("optional") else "secret"
            else:
                env[var["name"]] = None
                origin[var["name"]] = "other"

        def setting(name):
            return env[name] if name in env else DEFAULTS.get(name)

        for name in SECRET_ENV:
            if name not in origin:
                continue
            if name == "DATABASE_URL" and origin[name] != "secret" and "://" not in str(env[name]):
                continue  # a SQLite path is no secret
            c.check(origin[name] in ("secret", "optional-secret"), f"{cname}: {name} comes from a secretKeyRef")
        for name in REQUIRED_SECRETS:
            c.check(origin.get(name) == "secret", f"{cname}: {name} from a required (not optional) secretKeyRef")

        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", []) or []}
        addrs = {}
        for name in ("GRPC_ADDR", "HTTP_ADDR"):
            value = setting(name) or ""
            host, _, port = value.rpartition(":")
            addrs[name] = int(port) if port.isdigit() else None
            c.check(host in ("0.0.0.0", "[::]"), f"{cname}: {name}={value} listens on every interface")
            c.check(addrs[name] in ports.values(), f"{cname}: {name}'s port is a declared containerPort")

        def probe_port(probe_port_value):
            return ports.get(probe_port_value, probe_port_value)

        liveness = container.get("livenessProbe") or {}
        http = liveness.get("httpGet") or {}
        c.check(
            http.get("path") == "/healthz" and set(liveness) & {"exec", "tcpSocket", "grpc"} == set(),
            f"{cname}: liveness is GET /healthz only (never the database)",
        )
        c.check(probe_port(http.get("port")) == addrs["HTTP_ADDR"], f"{cname}: liveness probes the HTTP port")
        readiness = container.get("readinessProbe") or {}
        if "grpc" in readiness:
            c.check(probe_port(readiness["grpc"].get("port")) == addrs["GRPC_ADDR"], f"{cname}: readiness is gRPC health on the gRPC port")
        else:
            rhttp = readiness.get("httpGet") or {}
            c.check(rhttp.get("path") == "/readyz", f"{cname}: readiness is GET /readyz or gRPC health")
            c.check(probe_port(rhttp.get("port")) == addrs["HTTP_ADDR"], f"{cname}: readiness probes the HTTP port")
        startup = container.get("startupProbe")
        if startup:
            shttp = startup.get("httpGet") or {}
            c.check(shttp.get("path") == "/healthz", f"{cname}: the startup probe is GET /healthz")

        pre_stop = ((container.get("lifecycle") or {}).get("preStop")) or {}
        if "sleep" in pre_stop:
            wait = int(pre_stop["sleep"]["seconds"])
        elif "exec" in pre_stop and (pre_stop["exec"].get("command") or [""])[0] in ("sleep", "/bin/sleep"):
            wait = float(pre_stop["exec"]["command"][1])  # an image with a shell: sleep N
        else:
            wait = 0
        c.check(wait > 0, f"{cname}: a preStop wait ({wait} s)")
        drain, grace = seconds(setting("DRAIN_DELAY")), seconds(setting("SHUTDOWN_GRACE"))
        c.check(drain == 0 or drain < grace, f"{cname}: DRAIN_DELAY ({drain} s) < SHUTDOWN_GRACE ({grace} s)")
        period = pod.get("terminationGracePeriodSeconds", 30)
        c.check(
            period > wait + drain + grace,
            f"{cname}: terminationGracePeriodSeconds {period} > preStop {wait} + DRAIN_DELAY {drain} + SHUTDOWN_GRACE {grace}",
        )

        sc = container.get("securityContext", {}) or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        c.check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{cname}: runAsNonRoot")
        c.check(isinstance(uid, int) and uid > 0, f"{cname}: a numeric non-root UID ({uid})")
        c.check(sc.get("readOnlyRootFilesystem") is True, f"{cname}: read-only root filesystem")
        c.check(sc.get("allowPrivilegeEscalation") is False, f"{cname}: no privilege escalation")
        c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{cname}: every capability dropped")
        image = container.get("image", "")
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        c.check(("@sha256:" in image) or (tag and tag != "latest"), f"{cname}: image {image} pinned by tag or digest")

        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy", {}) or {}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", []) or []}
        volumes = {v["name"]: v for v in pod.get("volumes", []) or []}
        if mode == "sqlite":
            c.check(replicas == 1, f"sqlite: one replica ({replicas})")
            c.check(strategy.get("type") == "Recreate", f"sqlite: strategy Recreate ({strategy.get('type', 'RollingUpdate')})")
            c.check(not of_kind(docs, "HorizontalPodAutoscaler"), "sqlite: no autoscaler")
            url = setting("DATABASE_URL") or ""
            c.check(url.startswith("/") and "://" not in url, f"sqlite: DATABASE_URL {url!r} is an absolute SQLite path")
            claims = {p["metadata"]["name"] for p in of_kind(docs, "PersistentVolumeClaim")}
            on_claim = [
                path for path, vol in mounts.items()
                if url.startswith(path.rstrip("/") + "/")
                and (volumes.get(vol, {}).get("persistentVolumeClaim") or {}).get("claimName") in claims
            ]
            c.check(bool(on_claim), f"sqlite: {url} is on a mounted, rendered PersistentVolumeClaim")
        else:
            c.check(replicas >= 2, f"postgres: two replicas or more ({replicas})")
            c.check(strategy.get("type", "RollingUpdate") == "RollingUpdate", "postgres: rolling update")
            max_unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable")
            c.check(max_unavailable in (0, "0", "0%"), f"postgres: maxUnavailable 0 ({max_unavailable})")
            c.check(origin.get("DATABASE_URL") == "secret", "postgres: DATABASE_URL from a required secretKeyRef")
            pdbs = [
                p for p in of_kind(docs, "PodDisruptionBudget")
                if all(pod_labels.get(k) == v for k, v in ((p["spec"].get("selector") or {}).get("matchLabels") or {}).items())
                and (p["spec"].get("selector") or {}).get("matchLabels")
            ]
            c.check(len(pdbs) == 1, "postgres: a PodDisruptionBudget selects the pods")
            for p in pdbs:
                lets_one_go = (
                    "maxUnavailable" in p["spec"] and str(p["spec"]["maxUnavailable"]) not in ("0", "0%")
                ) or ("minAvailable" in p["spec"] and isinstance(p["spec"]["minAvailable"], int) and p["spec"]["minAvailable"] < replicas)
                c.check(lets_one_go, "postgres: the PodDisruptionBudget lets one replica go (drains can proceed)")
    return c


if __name__ == "__main__":
    result = main()
    print(f"manifests: {result.passed} passed, {result.failed} failed")
    sys.exit(1 if result.failed else 0)
