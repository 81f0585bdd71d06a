"""Structural and cross-file checks of deploy/ that schemas cannot make.

kubernetes-validate knows the built-in kinds only; ServiceMonitor is a CRD
(monitoring.coreos.com/v1) whose schema ships with the Prometheus Operator,
not with Kubernetes, so it is checked here field by field. The other checks
tie the files together so that they cannot drift apart:

- the DaemonSet's capabilities equal the systemd unit's (and the Dockerfile's
  setcap), and drop ALL;
- probes hit /-/healthy and /-/ready on the port named "metrics";
- Service and ServiceMonitor select the DaemonSet's pods on that port name;
- the ConfigMap holds sensor.toml (written out with --extract-config so the
  sensor binary can parse it).

Usage: check_manifests.py DEPLOY_DIR [--extract-config FILE]
Exits 1 with one line per problem.
"""

import pathlib
import re
import sys

import yaml

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def load(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    check(len(docs) == 1, f"{path.name}: expected one document, found {len(docs)}")
    return docs[0] if docs else {}


def unit_caps(unit):
    caps = {}
    for line in unit.read_text().splitlines():
        m = re.match(r"^(AmbientCapabilities|CapabilityBoundingSet)=(.*)$", line)
        if m:
            caps[m.group(1)] = sorted(c.removeprefix("CAP_") for c in m.group(2).split())
    return caps


def main():
    deploy = pathlib.Path(sys.argv[1])
    extract = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--extract-config" else None
    k8s = deploy / "kubernetes"

    caps = unit_caps(deploy / "systemd" / "sensor.service")
    want = caps.get("AmbientCapabilities")
    check(want, "sensor.service: no AmbientCapabilities=")
    check(caps.get("CapabilityBoundingSet") == want,
          f"sensor.service: bounding set {caps.get('CapabilityBoundingSet')} != ambient {want}")

    docker = (deploy / "container" / "Dockerfile").read_text()
    m = re.search(r"setcap (\S+)\+ep", docker)
    if check(m, "Dockerfile: no `setcap CAPS+ep`"):
        file_caps = sorted(c.removeprefix("cap_").upper() for c in m.group(1).split(","))
        check(file_caps == want, f"Dockerfile: setcap {file_caps} != unit {want}")
    check(re.search(r"^USER (?!0\b|root\b)\S+", docker, re.M),
          "Dockerfile: no non-root USER")

    ds = load(k8s / "daemonset.yaml")
    pod = ds.get("spec", {}).get("template", {})
    labels = pod.get("metadata", {}).get("labels", {})
    spec = pod.get("spec", {})
    check(spec.get("hostNetwork") is True, "daemonset: hostNetwork must be true")
    containers = spec.get("containers", [])
    if check(len(containers) == 1, "daemonset: expected one container"):
        c = containers[0]
        sc = c.get("securityContext", {})
        add = sorted(sc.get("capabilities", {}).get("add", []))
        check(add == want, f"daemonset: capabilities.add {add} != unit {want}")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], "daemonset: must drop ALL")
        check(sc.get("privileged") is not True, "daemonset: must not be privileged")
        check(sc.get("allowPrivilegeEscalation") is True,
              "daemonset: file capabilities need allowPrivilegeEscalation: true")
        check(spec.get("securityContext", {}).get("runAsNonRoot") is True,
              "daemonset: runAsNonRoot must be true")
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        check("metrics" in ports, "daemonset: no container port named metrics")
        for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
            get = c.get(probe, {}).get("httpGet", {})
            check(get.get("path") == path, f"daemonset: {probe} path {get.get('path')} != {path}")
            check(get.get("port") == "metrics", f"daemonset: {probe} port is not 'metrics'")
        for kind in ("requests", "limits"):
            res = c.get("resources", {}).get(kind, {})
            check({"cpu", "memory"} <= set(res), f"daemonset: resources.{kind} needs cpu and memory")
        mounts = {v.get("name"): v.get("mountPath") for v in c.get("volumeMounts", [])}
        check(mounts.get("bpffs") == "/sys/fs/bpf", "daemonset: bpffs not mounted at /sys/fs/bpf")
        ann = pod.get("metadata", {}).get("annotations", {})
        check(ann.get("prometheus.io/port") == str(ports.get("metrics")),
              "daemonset: prometheus.io/port != the metrics port")
    volumes = {v.get("name"): v for v in spec.get("volumes", [])}
    check(volumes.get("bpffs", {}).get("hostPath", {}).get("path") == "/sys/fs/bpf",
          "daemonset: bpffs volume is not hostPath /sys/fs/bpf")

    svc = load(k8s / "service.yaml")
    sel = svc.get("spec", {}).get("selector", {})
    check(sel and all(labels.get(k) == v for k, v in sel.items()),
          f"service: selector {sel} does not match the pod labels {labels}")
    check(any(p.get("name") == "metrics" for p in svc.get("spec", {}).get("ports", [])),
          "service: no port named metrics")

    sm = load(k8s / "servicemonitor.yaml")
    check(sm.get("apiVersion") == "monitoring.coreos.com/v1", "servicemonitor: apiVersion")
    check(sm.get("kind") == "ServiceMonitor", "servicemonitor: kind")
    check(sm.get("metadata", {}).get("name"), "servicemonitor: metadata.name")
    smspec = sm.get("spec", {})
    known = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels",
             "podTargetLabels", "sampleLimit", "attachMetadata"}
    check(set(smspec) <= known, f"servicemonitor: unknown spec keys {set(smspec) - known}")
    ml = smspec.get("selector", {}).get("matchLabels", {})
    svc_labels = svc.get("metadata", {}).get("labels", {})
    check(ml and all(svc_labels.get(k) == v for k, v in ml.items()),
          f"servicemonitor: selector {ml} does not match the service labels {svc_labels}")
    eps = smspec.get("endpoints", [])
    check(eps, "servicemonitor: no endpoints")
    dur = re.compile(r"^(\d+(ms|s|m|h))+$")
    ep_keys = {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
               "metricRelabelings", "honorLabels", "tlsConfig", "basicAuth"}
    for i, ep in enumerate(eps):
        check(set(ep) <= ep_keys, f"servicemonitor: endpoint {i}: unknown keys {set(ep) - ep_keys}")
        check(ep.get("port") == "metrics", f"servicemonitor: endpoint {i} port != metrics")
        check(ep.get("path", "/metrics") == "/metrics", f"servicemonitor: endpoint {i} path")
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                check(dur.match(str(ep[key])), f"servicemonitor: endpoint {i} {key} is not a duration")
        for rl in ep.get("relabelings", []) + ep.get("metricRelabelings", []):
            check(rl.get("action", "replace") in {"replace", "keep", "drop", "labeldrop",
                                                   "labelkeep", "labelmap", "hashmod"},
                  f"servicemonitor: endpoint {i}: bad relabel action {rl.get('action')}")
            if "regex" in rl:
                try:
                    re.compile(rl["regex"])
                except re.error as e:
                    problems.append(f"servicemonitor: endpoint {i}: bad regex: {e}")

    cm = load(k8s / "configmap.yaml")
    toml = cm.get("data", {}).get("sensor.toml")
    check(toml, "configmap: no data.sensor.toml")
    if toml and extract:
        pathlib.Path(extract).write_text(toml)

    for p in problems:
        print(f"check_manifests: {p}")
    if problems:
        sys.exit(1)
    print("check_manifests: consistent (capabilities "
          + ",".join(want or []) + "; probes, ports, selectors, ServiceMonitor structure)")


main()
