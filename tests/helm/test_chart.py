"""The Helm chart, rendered and linted offline with Helm v4's Go SDK (helm-python-sdk).

Every value set in tests/helm/values/ (plus the defaults) is rendered; each object must
validate against the Kubernetes schemas of 1.30 (the chart's oldest) and of the newest
version kubernetes-validate bundles, strictly (unknown fields fail). The assertions below
check what an operator of the platform relies on: both SIP protocols reach the edge, RBAC
grants nothing beyond what the operator uses, every pod is probed, bounded and runs under
the restricted Pod Security Standard, and values.schema.json refuses wrong input.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate.utils as kv
import pytest
import yaml

from conftest import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUE_SETS,
    Rendered,
    chart,
    fullname,
    render,
    rendered_set,
    strip,
)

KUBE_VERSIONS = ["1.30.0", kv.latest_version()]

# The metrics the binaries export (the edge/operator contract); the dashboard and the
# alerts may use nothing else.
METRICS = {
    "switchyard_edge_transfers_total",
    "switchyard_edge_transfer_duration_seconds",
    "switchyard_edge_transfers_active",
    "switchyard_edge_calls_active",
    "switchyard_edge_sip_requests_total",
    "switchyard_edge_sip_responses_total",
    "switchyard_edge_rcml_fetch_duration_seconds",
    "switchyard_edge_store_errors_total",
    "switchyard_operator_reconciliations_total",
    "switchyard_operator_routes",
    "switchyard_operator_is_leader",
}
HISTOGRAMS = {"switchyard_edge_transfer_duration_seconds", "switchyard_edge_rcml_fetch_duration_seconds"}


def metric_names(text: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bswitchyard_[a-z_]+\b", text):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
                name = name[: -len(suffix)]
        names.add(name)
    return names


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container(r: Rendered, deployment: str, name: str) -> dict[str, Any]:
    d = r.one("Deployment", deployment)
    return next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the chart as a whole --------------------------------------------------------------


def test_crd_in_the_chart_is_identical_to_the_generated_one():
    generated = (ROOT / "crds" / "phonenumbers.yaml").read_bytes()
    shipped = (CHART / "crds" / "phonenumbers.yaml").read_bytes()
    assert shipped == generated, (
        "charts/switchyard/crds/phonenumbers.yaml is stale: "
        "cp crds/phonenumbers.yaml charts/switchyard/crds/phonenumbers.yaml"
    )
    assert [c["filename"] for c in chart().crds] == ["switchyard/crds/phonenumbers.yaml"]


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_the_crd_validates(kube_version):
    for crd in yaml.safe_load_all((CHART / "crds" / "phonenumbers.yaml").read_text()):
        kv.validate(crd, kube_version, strict=True)


@pytest.mark.parametrize("kube_version", ["v1.30.0", "v" + kv.latest_version()])
def test_lint_strict_has_no_errors_or_warnings(value_set, kube_version):
    report = helm.lint(
        CHART, VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version=kube_version
    )
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def validate_strictly(objects: list[dict[str, Any]], kube_version: str) -> None:
    """Every object against kubernetes-validate's strict schemas; the Prometheus Operator's
    kinds, which it has no schema for, against this file's own strict subset."""
    for obj in objects:
        try:
            kv.validate(strip(obj), kube_version, strict=True)
        except kv.SchemaNotFoundError:
            schema = {"ServiceMonitor": SERVICE_MONITOR, "PrometheusRule": PROMETHEUS_RULE}[obj["kind"]]
            jsonschema.validate(strip(obj), schema)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} ({obj['_template']}): {path}: {e.message}")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_strictly(rendered, kube_version):
    validate_strictly(rendered.objects, kube_version)


def test_strict_validation_really_rejects_unknown_fields():
    deployment = copy.deepcopy(strip(rendered_set("default").one("Deployment", fullname("-edge"))))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_the_kubernetes_validate_command_accepts_the_rendered_chart(tmp_path):
    docs = [strip(o) for o in rendered_set("monitoring").objects]
    docs = [d for d in docs if d["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    manifest = tmp_path / "switchyard.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    cli = Path(sys.executable).with_name("kubernetes-validate")
    for version in KUBE_VERSIONS:
        done = subprocess.run(
            [str(cli), "--strict", "--quiet", "-k", version, str(manifest)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_object_is_labelled_and_namespaced(rendered):
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for obj in rendered.objects:
        meta = obj["metadata"]
        labels = meta.get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "switchyard", meta["name"]
        assert labels.get("app.kubernetes.io/instance") == RELEASE, meta["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", meta["name"]
        assert labels.get("helm.sh/chart", "").startswith("switchyard-"), meta["name"]
        assert len(meta["name"]) <= 63, meta["name"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta
        else:
            assert meta.get("namespace"), f"{obj['kind']} {meta['name']} has no namespace"


def test_long_release_names_still_make_valid_object_names():
    long_name = "a-very-long-release-name-for-switchyard-telephony"
    objs = Rendered(chart().render({}, name=long_name, namespace=NAMESPACE)).objects
    for obj in objs:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
    statefulsets = [o for o in objs if o["kind"] == "StatefulSet"]
    assert all(len(s["metadata"]["name"]) <= 52 for s in statefulsets)


# --- SIP Service ------------------------------------------------------------------------


def test_sip_service_carries_udp_and_tcp_on_5060():
    r = rendered_set("default")
    svc = r.one("Service", fullname("-sip"))
    ports = {(p["protocol"], p["port"]) for p in svc["spec"]["ports"]}
    assert ports == {("UDP", 5060), ("TCP", 5060)}
    assert svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["externalTrafficPolicy"] == "Local"


def test_sip_service_targets_edge_container_ports_of_the_same_protocol(rendered):
    edge = rendered.one("Deployment", fullname("-edge"))
    pod_labels = edge["spec"]["template"]["metadata"]["labels"]
    edge_ports = {p["name"]: p for p in containers(edge)[0]["ports"]}
    sip = [s for s in rendered.of_kind("Service") if s["metadata"]["name"].startswith(fullname("-sip"))]
    assert sip
    protocols = set()
    for svc in sip:
        assert matches(svc["spec"]["selector"], pod_labels)
        for port in svc["spec"]["ports"]:
            target = edge_ports[port["targetPort"]]
            assert target["protocol"] == port["protocol"]
            protocols.add(port["protocol"])
    assert protocols == {"UDP", "TCP"}


def test_split_protocols_makes_one_service_per_protocol():
    r = rendered_set("split-services")
    assert not [s for s in r.of_kind("Service") if s["metadata"]["name"] == fullname("-sip")]
    udp = r.one("Service", fullname("-sip-udp"))
    tcp = r.one("Service", fullname("-sip-tcp"))
    assert [(p["protocol"], p["port"], p["nodePort"]) for p in udp["spec"]["ports"]] == [("UDP", 5060, 30560)]
    assert [(p["protocol"], p["port"], p["nodePort"]) for p in tcp["spec"]["ports"]] == [("TCP", 5060, 30561)]
    for svc in (udp, tcp):
        assert svc["spec"]["externalTrafficPolicy"] == "Cluster"
        assert svc["metadata"]["annotations"]["metallb.universe.tf/allow-shared-ip"] == "switchyard-sip"


def test_cluster_ip_sip_service_has_no_external_traffic_policy():
    svc = rendered_set("watch-namespaces").one("Service", fullname("-sip"))
    assert svc["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in svc["spec"]
    assert all("nodePort" not in p for p in svc["spec"]["ports"])


# --- RBAC -------------------------------------------------------------------------------

# What the operator uses, and nothing more.
NEEDED = {
    ("switchyard.dev", "phonenumbers"): {"get", "list", "watch", "patch", "update"},
    ("switchyard.dev", "phonenumbers/status"): {"get", "patch", "update"},
    ("switchyard.dev", "phonenumbers/finalizers"): {"update"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("coordination.k8s.io", "leases"): {"get", "create", "update", "patch"},
}


def grants(roles: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{role['metadata']['name']}: wildcard in {field}"
            assert "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_grants_exactly_what_the_operator_uses(rendered):
    roles = rendered.of_kind("ClusterRole") + rendered.of_kind("Role")
    granted = grants(roles)
    for key, verbs in granted.items():
        assert key in NEEDED, f"unexpected grant on {key}"
        assert verbs <= NEEDED[key], f"{key}: {sorted(verbs - NEEDED[key])} broader than needed"
    assert granted == NEEDED


def test_leases_only_in_the_release_namespace(rendered):
    for role in rendered.of_kind("ClusterRole"):
        assert all("leases" not in rule["resources"] for rule in role["rules"])
    lease_roles = [
        role for role in rendered.of_kind("Role")
        if any("leases" in rule["resources"] for rule in role["rules"])
    ]
    assert len(lease_roles) == 1
    role = lease_roles[0]
    assert role["metadata"]["namespace"] == NAMESPACE
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named and all(rule["resourceNames"] == [fullname("-operator")] for rule in named)
    # Only `create` (which cannot name an object that does not exist yet) is unnamed.
    assert all(rule["verbs"] == ["create"] for rule in role["rules"] if not rule.get("resourceNames"))
    operator = container(rendered, fullname("-operator"), "operator")
    assert f"--lease-name={fullname('-operator')}" in operator["args"]


def test_bindings_bind_the_operator_only(rendered):
    bindings = rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding")
    assert bindings
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": fullname("-operator"), "namespace": NAMESPACE}
        ]
        kind = binding["roleRef"]["kind"]
        names = [r["metadata"]["name"] for r in rendered.of_kind(kind)]
        assert binding["roleRef"]["name"] in names


def test_watch_namespaces_means_roles_per_namespace_and_nothing_cluster_wide():
    r = rendered_set("watch-namespaces")
    assert r.of_kind("ClusterRole") == [] and r.of_kind("ClusterRoleBinding") == []
    watched = {
        role["metadata"]["namespace"] for role in r.of_kind("Role")
        if any("phonenumbers" in rule["resources"] for rule in role["rules"])
    }
    assert watched == {"telephony", "voice-apps"}
    operator = container(r, fullname("-operator"), "operator")
    assert env(operator)["SWITCHYARD_NAMESPACES"]["value"] == "telephony,voice-apps"


def test_the_edge_has_no_kubernetes_api_access(rendered):
    edge = rendered.one("Deployment", fullname("-edge"))
    pod = edge["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == fullname("-edge")
    sa = rendered.one("ServiceAccount", fullname("-edge"))
    assert sa["automountServiceAccountToken"] is False
    for binding in rendered.of_kind("ClusterRoleBinding") + rendered.of_kind("RoleBinding"):
        assert all(s["name"] != fullname("-edge") for s in binding["subjects"])


# --- pods -------------------------------------------------------------------------------


def test_every_pod_meets_the_restricted_pod_security_standard(rendered):
    assert rendered.workloads()
    for workload in rendered.workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, name
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(host), f"{name}: {host}"
        allowed_volumes = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "projected", "downwardAPI", "ephemeral", "csi"}
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= allowed_volumes, f"{name}: volume {volume}"
        for c in containers(workload):
            sc = c.get("securityContext", {})
            where = f"{name}/{c['name']}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", psc.get("runAsUser")) not in (None, 0), where
            assert sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type") == "RuntimeDefault", where
            assert all("hostPort" not in p for p in c.get("ports", [])), where


def test_every_container_has_requests_and_limits(rendered):
    for workload in rendered.workloads():
        for c in containers(workload):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{c['name']}: {kind}"


def test_switchyard_containers_probe_healthz_and_readyz_on_the_metrics_port(rendered):
    for deployment, name in ((fullname("-operator"), "operator"), (fullname("-edge"), "edge")):
        c = container(rendered, deployment, name)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == 9090
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert env(c)["SWITCHYARD_METRICS_LISTEN"]["value"] == "0.0.0.0:9090"


def test_every_container_is_probed(rendered):
    for workload in rendered.workloads():
        for c in containers(workload):
            assert "livenessProbe" in c and "readinessProbe" in c, c["name"]


def test_both_binaries_run_from_one_image(rendered):
    operator = container(rendered, fullname("-operator"), "operator")
    edge = container(rendered, fullname("-edge"), "edge")
    assert operator["image"] == edge["image"] == f"switchyard:{chart().metadata['appVersion']}"
    assert operator["command"] == ["/usr/local/bin/switchyard-operator"]
    assert edge["command"] == ["/usr/local/bin/switchyard-edge"]


def test_image_digest_pins_the_image():
    digest = "sha256:" + "ab" * 32
    r = render({"image": {"repository": "registry.example/switchyard", "tag": "1.2.3", "digest": digest}})
    assert container(r, fullname("-edge"), "edge")["image"] == f"registry.example/switchyard:1.2.3@{digest}"


def test_operator_runs_two_replicas_with_leader_election_env():
    r = rendered_set("default")
    d = r.one("Deployment", fullname("-operator"))
    assert d["spec"]["replicas"] == 2
    c = container(r, fullname("-operator"), "operator")
    e = env(c)
    assert e["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert e["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert "--resync-interval=60s" in c["args"]
    pdb = r.one("PodDisruptionBudget", fullname("-operator"))
    assert matches(pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"])


def test_edge_drains_before_it_stops(rendered):
    edge = rendered.one("Deployment", fullname("-edge"))
    pod = edge["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sleep = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > 0
    assert pod["terminationGracePeriodSeconds"] > sleep
    assert edge["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_grace_period_shorter_than_the_pre_stop_sleep_is_refused():
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"edge": {"terminationGracePeriodSeconds": 5, "preStopSleepSeconds": 10}})


def test_edge_gets_the_addresses_it_advertises_and_its_pod_identity(rendered, value_set):
    c = container(rendered, fullname("-edge"), "edge")
    e = env(c)
    assert e["SWITCHYARD_SIP_LISTEN"]["value"] == "0.0.0.0:5060"
    assert e["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert e["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    advertise = VALUE_SETS[value_set].get("edge", {}).get("advertise")
    if advertise:
        assert e["SWITCHYARD_ADVERTISE"]["value"] == advertise
    else:
        sip = [s["metadata"]["name"] for s in rendered.of_kind("Service") if "-sip" in s["metadata"]["name"]]
        host = e["SWITCHYARD_ADVERTISE"]["value"].split(".")[0]
        assert host in sip


# --- scaling ----------------------------------------------------------------------------


def test_hpa_scales_the_edge_on_cpu_and_owns_its_replicas():
    r = rendered_set("default")
    edge = r.one("Deployment", fullname("-edge"))
    assert "replicas" not in edge["spec"], "with an HPA the Deployment must not set replicas"
    hpa = r.one("HorizontalPodAutoscaler", fullname("-edge"))
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": fullname("-edge")}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}


def test_hpa_off_fixes_the_replica_count():
    r = rendered_set("hpa-off")
    assert r.of_kind("HorizontalPodAutoscaler") == []
    assert r.one("Deployment", fullname("-edge"))["spec"]["replicas"] == 3


def test_hpa_min_above_max_is_refused():
    with pytest.raises(helm.HelmRenderError, match="minReplicas"):
        render({"edge": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}})


def test_edge_pdb_selects_the_edge_pods(rendered):
    edge = rendered.one("Deployment", fullname("-edge"))
    pdb = rendered.one("PodDisruptionBudget", fullname("-edge"))
    assert pdb["spec"]["maxUnavailable"] == 1
    assert matches(pdb["spec"]["selector"]["matchLabels"], edge["spec"]["template"]["metadata"]["labels"])


# --- Redis ------------------------------------------------------------------------------


def redis_env(r: Rendered) -> list[dict[str, dict[str, Any]]]:
    return [env(container(r, fullname("-operator"), "operator")), env(container(r, fullname("-edge"), "edge"))]


def test_external_redis_url_and_password_from_a_secret():
    r = rendered_set("external-redis")
    assert r.of_kind("StatefulSet") == []
    for e in redis_env(r):
        assert e["SWITCHYARD_REDIS_URL"]["value"] == "redis://redis-master.data.svc.cluster.local:6379/0"
        assert e["SWITCHYARD_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "switchyard-redis",
            "key": "redis-password",
        }
    assert env(container(r, fullname("-edge"), "edge"))["SWITCHYARD_OUTBOUND_PROXY"]["value"] == "trunk.example.com:5060"


def test_refer_target_allow_becomes_one_flag_per_pattern_before_extra_args():
    default = container(render(), fullname("-edge"), "edge")
    assert not any(a.startswith("--refer-target-allow") for a in default.get("args", []))
    values = {"edge": {"referTargetAllow": [r"\+1555\d{7}", "sip:.*@pbx\\.example"], "extraArgs": ["--log-format=json"]}}
    chart().validate_schema(values)
    edge = container(render(values), fullname("-edge"), "edge")
    assert edge["args"] == [
        r"--refer-target-allow=\+1555\d{7}",
        "--refer-target-allow=sip:.*@pbx\\.example",
        "--log-format=json",
    ]
    with pytest.raises(helm.HelmValuesError, match="referTargetAllow"):
        chart().validate_schema({"edge": {"referTargetAllow": [""]}})


def edge_container(r: Rendered) -> dict[str, Any]:
    return container(r, fullname("-edge"), "edge")


def test_rate_limits_are_on_by_default_and_auth_off():
    r = render()
    e = env(edge_container(r))
    assert e["SWITCHYARD_RATE_LIMIT_PER_SOURCE"]["value"] == "50"
    assert e["SWITCHYARD_RATE_LIMIT_BURST"]["value"] == "100"
    assert e["SWITCHYARD_RATE_LIMIT_SOURCES"]["value"] == "65536"
    assert e["SWITCHYARD_REFER_LIMIT_PER_CALL"]["value"] == "10"
    assert e["SWITCHYARD_REFER_LIMIT_WINDOW"]["value"] == "60s"
    assert "SWITCHYARD_RATE_LIMIT_EXEMPT" not in e
    assert not any(name.startswith("SWITCHYARD_AUTH_") for name in e)
    pod = r.one("Deployment", fullname("-edge"))["spec"]["template"]["spec"]
    assert "volumes" not in pod and "volumeMounts" not in edge_container(r)


def test_digest_auth_reads_credentials_and_nonce_secret_from_the_secret():
    r = rendered_set("edge-defences")
    c = edge_container(r)
    e = env(c)
    assert e["SWITCHYARD_AUTH_CREDENTIALS"]["value"] == "/etc/switchyard/auth/credentials"
    # The nonce secret never appears in the manifest: a reference to the Secret.
    assert e["SWITCHYARD_AUTH_NONCE_SECRET"] == {
        "name": "SWITCHYARD_AUTH_NONCE_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "switchyard-sip-auth", "key": "nonce"}},
    }
    assert e["SWITCHYARD_AUTH_REALM"]["value"] == "sip.example.com"
    assert e["SWITCHYARD_AUTH_METHODS"]["value"] == "INVITE,REFER"
    assert e["SWITCHYARD_AUTH_ALGORITHMS"]["value"] == "SHA-256,MD5"
    assert e["SWITCHYARD_AUTH_TRUSTED"]["value"] == "192.0.2.0/24"
    assert e["SWITCHYARD_AUTH_NONCE_LIFETIME"]["value"] == "2m"
    assert e["SWITCHYARD_RATE_LIMIT_EXEMPT"]["value"] == "192.0.2.0/24,198.51.100.7"
    assert e["SWITCHYARD_RATE_LIMIT_PER_SOURCE"]["value"] == "20"
    assert e["SWITCHYARD_RATE_LIMIT_SOURCES"]["value"] == "100000"
    assert e["SWITCHYARD_REFER_LIMIT_PER_CALL"]["value"] == "3"
    # Only the credentials key is mounted, read-only, where the edge reads it.
    pod = r.one("Deployment", fullname("-edge"))["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {
            "name": "auth",
            "secret": {
                "secretName": "switchyard-sip-auth",
                "items": [{"key": "clients", "path": "credentials"}],
            },
        }
    ]
    assert c["volumeMounts"] == [{"name": "auth", "mountPath": "/etc/switchyard/auth", "readOnly": True}]


def test_digest_auth_without_a_secret_fails_to_render():
    with pytest.raises(helm.HelmRenderError, match="existingSecret"):
        render({"edge": {"auth": {"enabled": True}}})


@pytest.mark.parametrize(
    "values",
    [
        {"auth": {"methods": ["BYE"]}},
        {"auth": {"methods": []}},
        {"auth": {"algorithms": ["SHA-1"]}},
        {"auth": {"realm": 'a"b'}},
        {"auth": {"nonceLifetime": "five minutes"}},
        {"auth": {"trustedSources": [""]}},
        {"rateLimit": {"perSource": -1}},
        {"rateLimit": {"burst": 0}},
        {"rateLimit": {"maxSources": 0}},
        {"rateLimit": {"refersPerCall": 1.5}},
        {"rateLimit": {"referWindow": "1 minute"}},
        {"rateLimit": {"unknown": 1}},
    ],
)
def test_the_schema_refuses_bad_auth_and_rate_limit_values(values: dict[str, Any]):
    with pytest.raises(helm.HelmValuesError):
        chart().validate_schema({"edge": values})


def test_bundled_redis_is_a_single_node_statefulset_behind_a_service():
    r = rendered_set("bundled-redis")
    sts = r.one("StatefulSet", fullname("-redis"))
    assert sts["spec"]["replicas"] == 1
    svc = r.one("Service", fullname("-redis"))
    assert matches(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])
    url = f"redis://{fullname('-redis')}.{NAMESPACE}.svc.cluster.local:6379"
    for e in redis_env(r):
        assert e["SWITCHYARD_REDIS_URL"]["value"] == url
        assert e["SWITCHYARD_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "switchyard-redis"
    redis = containers(sts)[0]
    assert "--requirepass" in redis["args"]
    assert env(redis)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "switchyard-redis"
    # No volume claim asked for: an emptyDir.
    assert "volumeClaimTemplates" not in sts["spec"]
    assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]


def test_default_bundled_redis_keeps_its_data_on_a_claim_without_a_password():
    r = rendered_set("default")
    sts = r.one("StatefulSet", fullname("-redis"))
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    for e in redis_env(r):
        assert "SWITCHYARD_REDIS_PASSWORD" not in e
    assert "WARNING: Redis runs as a single pod" in r.notes


CLUSTER_URL = "redis+cluster://redis-0.redis.data:6379,redis-1.redis.data:6379,redis-2.redis.data:6379"
SENTINEL_URL = "redis+sentinel://sentinel-0.data:26379,sentinel-1.data:26379,sentinel-2.data:26379/mymaster"


@pytest.mark.parametrize("url", [CLUSTER_URL, CLUSTER_URL.replace("redis+", "rediss+"), SENTINEL_URL])
def test_cluster_and_sentinel_urls_reach_both_binaries(url):
    values = {"redis": {"url": url, "bundled": {"enabled": False}, "auth": {"existingSecret": "redis-auth"}}}
    chart().validate_schema(values)
    r = render(values)
    assert r.of_kind("StatefulSet") == []
    for e in redis_env(r):
        assert e["SWITCHYARD_REDIS_URL"]["value"] == url
        assert e["SWITCHYARD_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "password"}
        assert "SWITCHYARD_REDIS_SENTINEL_PASSWORD" not in e


def test_the_sentinels_password_comes_from_the_same_secret():
    values = {
        "redis": {
            "url": SENTINEL_URL,
            "bundled": {"enabled": False},
            "auth": {"existingSecret": "redis-auth", "existingSecretSentinelPasswordKey": "sentinel-password"},
        }
    }
    chart().validate_schema(values)
    for e in redis_env(render(values)):
        assert e["SWITCHYARD_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-auth",
            "key": "sentinel-password",
        }


@pytest.mark.parametrize(
    "values, message",
    [
        ({"auth": {"existingSecretSentinelPasswordKey": "s"}, "url": SENTINEL_URL}, "set that Secret too"),
        (
            {"auth": {"existingSecret": "a", "existingSecretSentinelPasswordKey": "s"}, "url": CLUSTER_URL},
            "is for Sentinel",
        ),
    ],
)
def test_a_sentinel_password_without_its_secret_or_without_sentinel_is_refused(values, message):
    values = {"redis": {**values, "bundled": {"enabled": False}}}
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel://sentinel-0:26379", "redis+sentinel://s/m/db", "redis+cluster:/h:6379", "memcached://h"],
)
def test_the_schema_refuses_redis_urls_the_binaries_would(url):
    with pytest.raises(helm.HelmValuesError, match="/redis/url"):
        chart().validate_schema({"redis": {"url": url, "bundled": {"enabled": False}}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"redis": {"url": "redis://r:6379"}}, "not both"),
        ({"redis": {"bundled": {"enabled": False}}}, "set redis.url"),
    ],
)
def test_redis_must_be_chosen_exactly_once(values, message):
    with pytest.raises(helm.HelmRenderError, match=message):
        render(values)


# --- metrics, alerts, dashboard, network policy -----------------------------------------


def test_metrics_services_select_each_component(rendered):
    for component in ("operator", "edge"):
        svc = rendered.one("Service", fullname(f"-{component}-metrics"))
        workload = rendered.one("Deployment", fullname(f"-{component}"))
        assert matches(svc["spec"]["selector"], workload["spec"]["template"]["metadata"]["labels"])
        assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


# The fields of the Prometheus Operator's kinds this chart writes (its own subset of
# monitoring.coreos.com/v1, strict: a misspelt field fails here rather than in a cluster).
_META = {"type": "object", "required": ["name", "namespace"]}
SERVICE_MONITOR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}, "any": {"type": "boolean"}},
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                },
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                            "scrapeTimeout": {"type": "string"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d|w|y))+$"},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def test_service_monitor_scrapes_both_metrics_services():
    r = rendered_set("monitoring")
    [sm] = r.of_kind("ServiceMonitor")
    jsonschema.validate(strip(sm), SERVICE_MONITOR)
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = [
        s for s in r.of_kind("Service")
        if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in selected) == [fullname("-edge-metrics"), fullname("-operator-metrics")]
    for svc in selected:
        assert any(p["name"] == sm["spec"]["endpoints"][0]["port"] for p in svc["spec"]["ports"])


def test_prometheus_rule_alerts_on_the_transfer_failure_ratio():
    r = rendered_set("monitoring")
    [rule] = r.of_kind("PrometheusRule")
    jsonschema.validate(strip(rule), PROMETHEUS_RULE)
    alerts = {a["alert"]: a for g in rule["spec"]["groups"] for a in g["rules"] if "alert" in a}
    ratio = alerts["SwitchyardTransferFailureRatioHigh"]
    expr = ratio["expr"]
    assert 'switchyard_edge_transfers_total{namespace="switchyard", job="sy-switchyard-edge-metrics", result="failed"}' in expr
    assert "> 0.1" in expr and "> 0.01" in expr
    assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
    assert ratio["for"] == "10m"
    assert ratio["labels"] == {"severity": "warning", "team": "telephony"}
    assert "{{ $value | humanizePercentage }}" in ratio["annotations"]["description"]
    assert ratio["annotations"]["summary"] == "More than 10% of blind transfers fail"
    for alert in alerts.values():
        assert metric_names(alert["expr"]) <= METRICS


def test_dashboard_shows_transfers_latency_calls_and_sip_responses():
    dashboard_text = (CHART / "dashboards" / "switchyard.json").read_text()
    dashboard = json.loads(dashboard_text)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    joined = "\n".join(exprs)
    assert metric_names(joined) <= METRICS
    assert any("switchyard_edge_transfers_total" in e and "by (result)" in e for e in exprs)
    assert any("histogram_quantile" in e and "switchyard_edge_transfer_duration_seconds_bucket" in e for e in exprs)
    assert any("switchyard_edge_calls_active" in e for e in exprs)
    assert any("switchyard_edge_sip_responses_total" in e and "by (class)" in e for e in exprs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"] == "Switchyard"


def test_dashboard_configmap_is_optional_and_labelled_for_grafana():
    assert rendered_set("default").of_kind("ConfigMap") == []
    [cm] = rendered_set("monitoring").of_kind("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Telephony"}
    assert json.loads(cm["data"]["switchyard.json"]) == json.loads((CHART / "dashboards" / "switchyard.json").read_text())


def test_monitoring_objects_are_optional():
    r = rendered_set("default")
    assert r.of_kind("ServiceMonitor") == [] and r.of_kind("PrometheusRule") == []
    assert r.of_kind("NetworkPolicy") == []


def test_network_policies_cover_every_pod_and_name_real_ports():
    r = rendered_set("monitoring")
    policies = r.of_kind("NetworkPolicy")
    for workload in r.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies if matches(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(mine) == 1, workload["metadata"]["name"]
        port_names = {(p["name"], p["protocol"]) for c in containers(workload) for p in c.get("ports", [])}
        for rule in mine[0]["spec"]["ingress"]:
            for port in rule["ports"]:
                assert (port["port"], port["protocol"]) in port_names
    edge_policy = r.one("NetworkPolicy", fullname("-edge"))
    assert edge_policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    redis_policy = r.one("NetworkPolicy", fullname("-redis"))
    allowed = [peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for peer in redis_policy["spec"]["ingress"][0]["from"]]
    assert sorted(allowed) == ["edge", "operator"]


# --- values.schema.json, values.yaml, NOTES.txt -----------------------------------------


@pytest.mark.parametrize(
    "values, where",
    [
        ({"edge": {"autoscaling": {"minReplicas": "two"}}}, "/edge/autoscaling/minReplicas"),
        ({"operator": {"replicas": 1.5}}, "/operator/replicas"),
        ({"edge": {"service": {"type": "ExternalName"}}}, "/edge/service/type"),
        ({"edge": {"service": {"splitProtocols": "yes"}}}, "/edge/service/splitProtocols"),
        ({"redis": {"url": "http://not-redis"}}, "/redis/url"),
        ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
        ({"edeg": {"replicas": 3}}, "edeg"),
    ],
)
def test_schema_rejects_wrong_values(values, where):
    with pytest.raises(helm.HelmValuesError) as caught:
        chart().validate_schema(values)
    assert where in str(caught.value)
    # helm install/template refuse them too, before rendering anything.
    with pytest.raises(helm.HelmValuesError):
        render(values)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def _leaves(values: Any, path: tuple[str, ...] = ()):
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from _leaves(value, path + (key,))
    else:
        yield path


def _schema_at(schema: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path:
        schema = schema["properties"][key]
    return schema


def test_schema_types_and_describes_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _leaves(values):
        node = schema
        for depth, key in enumerate(path):
            props = node.get("properties", {})
            if key not in props:
                # Free-form maps (security contexts, affinity, ...) are typed as a whole.
                assert node.get("type") == "object" and "description" in node, path
                assert node.get("additionalProperties") is not False, path
                break
            node = props[key]
            assert "description" in node, ".".join(path[: depth + 1])
        else:
            assert "type" in node or "anyOf" in node or "const" in node or "enum" in node, ".".join(path)
    # Every object in the schema closes its set of keys (a typo is an error, not ignored).
    def closed(node: dict[str, Any], where: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False or node.get("additionalProperties", {}) != {}, where
            for key, child in node["properties"].items():
                closed(child, f"{where}.{key}")
    closed(schema, "values")


def test_values_yaml_comments_every_value():
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, commented) of the enclosing keys
    undocumented = []
    for n, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        commented = n > 0 and lines[n - 1].strip().startswith("#")
        # A key is documented by its own comment or by its parent's or grandparent's
        # (e.g. resources.requests.cpu under a commented `resources:`).
        if not (commented or any(c for _, c in stack[-2:])):
            undocumented.append(f"line {n + 1}: {line.strip()}")
        stack.append((indent, commented))
    assert undocumented == []


def test_notes_show_how_to_apply_a_first_phone_number(rendered):
    notes = rendered.notes
    assert "kind: PhoneNumber" in notes
    assert "apiVersion: switchyard.dev/v1alpha1" in notes
    assert "kubectl apply" in notes
    assert "get pn" in notes
    assert "helm upgrade" in notes and "crds/" in notes


def test_notes_example_phone_number_is_valid():
    notes = rendered_set("default").notes
    block = notes.split("cat <<'YAML' | kubectl apply -f -\n", 1)[1].split("YAML\n", 1)[0]
    lines = block.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    doc = yaml.safe_load("\n".join(line[indent:] for line in lines))
    validate_phone_number(doc)


# --- examples/ --------------------------------------------------------------------------


def _k8s_schema(node: Any) -> Any:
    """The CRD's structural schema as JSON Schema, strict like the API server's pruning."""
    if isinstance(node, list):
        return [_k8s_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _k8s_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def validate_phone_number(doc: dict[str, Any]) -> None:
    crd = yaml.safe_load((ROOT / "crds" / "phonenumbers.yaml").read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["storage"]]
    assert doc["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert doc["kind"] == crd["spec"]["names"]["kind"]
    schema = _k8s_schema(version["schema"]["openAPIV3Schema"])
    schema["properties"].update(
        {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
    )
    jsonschema.validate(doc, schema)
    # The CRD's CEL rules, by hand: exactly one of phoneNumber and pattern; priority only
    # with a pattern.
    spec = doc["spec"]
    assert ("phoneNumber" in spec) != ("pattern" in spec)
    assert "priority" not in spec or "pattern" in spec
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def test_examples_are_ready_for_kubectl_apply():
    kinds = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            kinds.append(doc["kind"])
            if doc["kind"] == "PhoneNumber":
                validate_phone_number(doc)
                assert doc["metadata"]["namespace"] == "telephony"
            else:
                for version in KUBE_VERSIONS:
                    kv.validate(doc, version, strict=True)
    assert kinds.count("PhoneNumber") == 2 and "Namespace" in kinds


# --- the image the chart runs -----------------------------------------------------------


def test_the_dockerfile_builds_what_the_chart_runs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "cargo build --release --locked -p switchyard-operator -p switchyard-edge" in dockerfile
    r = rendered_set("default")
    for deployment, name in ((fullname("-operator"), "operator"), (fullname("-edge"), "edge")):
        [binary] = container(r, deployment, name)["command"]
        assert binary.startswith("/usr/local/bin/")
        assert f"/out/{Path(binary).name}" in dockerfile
    assert "COPY --from=build /out/ /usr/local/bin/" in dockerfile
    # The runtime user is the one the chart's securityContext runs as.
    uid = chart().values["podSecurityContext"]["runAsUser"]
    assert re.search(rf"^USER {uid}:{uid}$", dockerfile, re.M)
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert len(stages) == 2 and "distroless" in stages[-1]


# --- less common values -----------------------------------------------------------------

LESS_COMMON = {
    "nodeport": {"edge": {"service": {"type": "NodePort", "nodePorts": {"udp": 31060, "tcp": 31061}, "sessionAffinity": "ClientIP"}}},
    "clusterip-split": {"edge": {"service": {"type": "ClusterIP", "splitProtocols": True}}},
    "other-ports": {"metrics": {"port": 9464}, "edge": {"containerPort": 5080, "service": {"port": 5080}}},
    "existing-service-accounts": {
        "operator": {"serviceAccount": {"create": False, "name": "platform-switchyard"}},
        "edge": {"serviceAccount": {"create": False}},
    },
    "placement": {
        "commonLabels": {"team": "telephony"},
        "imagePullSecrets": [{"name": "regcred"}],
        "operator": {
            "podAnnotations": {"example.com/owner": "telephony"},
            "priorityClassName": "system-cluster-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "voice", "effect": "NoSchedule"}],
            "podDisruptionBudget": {"maxUnavailable": "50%"},
            "extraArgs": ["--lease-duration=15s"],
        },
        "edge": {
            "podLabels": {"sidecar.istio.io/inject": "false"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "voice", "operator": "Exists"}]}]}}},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "edge"}}}],
            "autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}},
            "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
            "extraArgs": ["--log-format=json"],
            "service": {"loadBalancerClass": "service.k8s.aws/nlb", "loadBalancerSourceRanges": ["198.51.100.0/24"], "labels": {"expose": "public"}},
        },
        "redis": {"bundled": {"persistence": {"storageClass": "fast", "size": "5Gi"}, "maxmemory": "1gb"}},
    },
    "names": {"nameOverride": "sy-app", "fullnameOverride": "voice-switchyard"},
    "monitoring-elsewhere": {
        "metrics": {
            "service": {"annotations": {"prometheus.io/scrape": "true"}},
            "serviceMonitor": {"enabled": True, "namespace": "monitoring", "relabelings": [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}]},
            "prometheusRule": {"enabled": True, "namespace": "monitoring", "extraAlerts": False},
        },
        "grafana": {"dashboard": {"enabled": True, "namespace": "grafana"}},
        "networkPolicy": {"enabled": True},
        "redis": {"url": "redis://redis:6379", "bundled": {"enabled": False}},
    },
}


@pytest.mark.parametrize("case", sorted(LESS_COMMON))
def test_less_common_values_render_valid_objects(case):
    values = LESS_COMMON[case]
    chart().validate_schema(values)
    r = render(values)
    for version in KUBE_VERSIONS:
        validate_strictly(r.objects, version)
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    # The properties that hold for every value set hold here too.
    test_rbac_grants_exactly_what_the_operator_uses(r)
    test_every_pod_meets_the_restricted_pod_security_standard(r)
    test_every_container_has_requests_and_limits(r)
    if case != "names":  # the SIP check finds objects by their default names
        test_sip_service_targets_edge_container_ports_of_the_same_protocol(r)


def test_less_common_values_do_what_they_say():
    r = render(LESS_COMMON["existing-service-accounts"])
    assert r.of_kind("ServiceAccount") == []
    assert r.one("Deployment", fullname("-operator"))["spec"]["template"]["spec"]["serviceAccountName"] == "platform-switchyard"
    assert r.one("ClusterRoleBinding", fullname("-operator"))["subjects"][0]["name"] == "platform-switchyard"
    assert r.one("Deployment", fullname("-edge"))["spec"]["template"]["spec"]["serviceAccountName"] == "default"

    r = render(LESS_COMMON["other-ports"])
    edge = container(r, fullname("-edge"), "edge")
    assert env(edge)["SWITCHYARD_SIP_LISTEN"]["value"] == "0.0.0.0:5080"
    assert env(edge)["SWITCHYARD_METRICS_LISTEN"]["value"] == "0.0.0.0:9464"
    assert env(edge)["SWITCHYARD_ADVERTISE"]["value"].endswith(":5080")
    assert {p["port"] for p in r.one("Service", fullname("-sip"))["spec"]["ports"]} == {5080}

    r = render(LESS_COMMON["monitoring-elsewhere"])
    [sm] = r.of_kind("ServiceMonitor")
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [rule] = r.of_kind("PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["switchyard.transfers"]
    assert r.of_kind("ConfigMap")[0]["metadata"]["namespace"] == "grafana"
    assert [p["metadata"]["name"] for p in r.of_kind("NetworkPolicy")] == [fullname("-edge"), fullname("-operator")]

    r = render(LESS_COMMON["placement"])
    assert r.one("Deployment", fullname("-edge"))["metadata"]["labels"]["team"] == "telephony"
    hpa = r.one("HorizontalPodAutoscaler", fullname("-edge"))
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 600}}
    assert container(r, fullname("-operator"), "operator")["args"][-1] == "--lease-duration=15s"


def test_names_follow_the_overrides():
    r = render(LESS_COMMON["names"])
    names = {o["metadata"]["name"] for o in r.objects}
    assert "voice-switchyard-edge" in names and "voice-switchyard-operator" in names
    assert all(o["metadata"]["labels"]["app.kubernetes.io/name"] == "sy-app" for o in r.objects)


def test_the_packaged_chart_carries_crds_schema_and_dashboard(tmp_path):
    archive = helm.package(CHART, destination=tmp_path)
    assert Path(archive).name == f"switchyard-{chart().version}.tgz"
    with helm.Chart.load_archive(Path(archive).read_bytes()) as packaged:
        assert [c["filename"] for c in packaged.crds] == ["switchyard/crds/phonenumbers.yaml"]
        assert packaged.schema == json.loads((CHART / "values.schema.json").read_text())
        files = {f["name"] for f in packaged.files}
        assert {"dashboards/switchyard.json", "README.md"} <= files
        assert not [f for f in files if "__pycache__" in f or f.endswith((".swp", ".orig"))]
        rendered = Rendered(packaged.render({}, name=RELEASE, namespace=NAMESPACE))
        assert len(rendered.objects) == len(rendered_set("default").objects)
