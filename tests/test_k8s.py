"""The Kubernetes manifests in k8s/: render them with `kubectl kustomize`, validate every
object against its schema (the KubeRay v1.7.0 CRDs in ../shared/k8s-crds for ray.io kinds,
the Kubernetes OpenAPI shipped with kubernetes-validate for core kinds) and check the
security promises of k8s/README.md: nothing exposed outside the cluster, ingress and
egress limited by NetworkPolicies, tokens only from Secrets that the deploy overlay must
be given (none in the base), images pinned by digest, MLflow behind authentication,
read-only root filesystems, limits on every container.

`rendered` is what an operator deploys: k8s/deploy rendered from a copy in which the
secret files were supplied, as k8s/README.md says; `base` is k8s/base alone.
"""

from __future__ import annotations

import base64
import configparser
import copy
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.reference import pinned_version

pytestmark = pytest.mark.integration  # runs `kubectl kustomize` in a subprocess

REPO = Path(__file__).resolve().parents[1]
# In CI the repository is cloned elsewhere with a copy of shared/ beside it.
# (or where $CPSWEEP_K8S_CRDS says, e.g. from a git worktree).
CRD_DIR = Path(os.environ.get("CPSWEEP_K8S_CRDS", REPO.parent / "shared" / "k8s-crds"))
K8S_VERSION = "1.30"  # oldest Kubernetes we support; kubernetes-validate ships 1.25+

RAY_CLUSTER = "cpsweep-ray"
OPERATOR_NAMESPACE = "kuberay-operator"  # where k8s/README.md installs the operator
# The pods that clients outside the namespace may reach, and on which ports: none. The API
# admits only pods labelled API_CLIENT (here, or in namespaces the overlay adds).
PUBLIC_PORTS: dict[str, set[int | str]] = {}
API_CLIENT = {"cpsweep.io/api-client": "true"}
SECRET_FILES = (
    "ray-auth-token", "api-token", "mlflow-db-username", "mlflow-db-password",
    "mlflow-admin-username", "mlflow-admin-password",
)  # fmt: skip
# MLflow's credentials file of the tracking user (k8s/README.md, "Secrets").
TRACKING_CREDENTIALS = (
    "[mlflow]\nmlflow_tracking_username = cpsweep\nmlflow_tracking_password = {password}\n"
)
RAY_HEAD_PORTS = {6379, 8265, 10001}  # GCS, dashboard + Jobs API, Ray client

Obj = dict[str, Any]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _name(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _kustomize(path: Path) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        msg = "kubectl not found: install it (Debian package `kubectl`) to render k8s/"
        if _in_ci():
            pytest.fail(f"{msg}; CI must run this test")
        pytest.skip(msg)
    return subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )


def _objects(proc: subprocess.CompletedProcess[str], what: str) -> list[Obj]:
    assert proc.returncode == 0, f"kubectl kustomize {what} failed:\n{proc.stderr}"
    objs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    assert objs, f"kubectl kustomize {what} rendered nothing"
    return objs


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return _objects(_kustomize(REPO / "k8s" / "base"), "k8s/base")


@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    """k8s/deploy with the secret files supplied (random values), as an operator does."""
    with tempfile.TemporaryDirectory() as tmp:
        k8s = Path(tmp) / "k8s"
        shutil.copytree(REPO / "k8s", k8s, ignore=shutil.ignore_patterns("secrets"))
        (k8s / "deploy" / "secrets").mkdir()
        _supply_secrets(k8s / "deploy" / "secrets")
        return _objects(_kustomize(k8s / "deploy"), "k8s/deploy")


def _supply_secrets(directory: Path) -> None:
    for name in SECRET_FILES:
        (directory / name).write_text(secrets.token_urlsafe(32))
    password = secrets.token_urlsafe(32)
    (directory / "mlflow-credentials").write_text(TRACKING_CREDENTIALS.format(password=password))


def _one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- CRD schemas: the API server's structural-schema rules in jsonschema ------------------


def _structural(node: Any) -> Any:
    """Turn an openAPIV3Schema into a jsonschema that rejects what the API server rejects.

    - x-kubernetes-int-or-string: integer or string (the CRD also spells it as anyOf).
    - Unknown fields: kubectl's default --validate=strict refuses them, so objects with
      `properties` get additionalProperties false unless x-kubernetes-preserve-unknown-fields.
    - nullable: null is allowed besides the declared type.
    """
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _structural(value) for key, value in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _list_type(
    validator: Any, list_type: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-type: `set` items are unique; `map` items are unique on their keys
    (e.g. two containers with one name, or two ports with one containerPort/protocol)."""
    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        seen_items = [json.dumps(item, sort_keys=True) for item in instance]
        if len(set(seen_items)) != len(seen_items):
            yield jsonschema.ValidationError(f"duplicate items in a list-type=set: {instance}")
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = schema.get("items", {}).get("properties", {})
        seen: dict[tuple[Any, ...], int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(
                    f"items {seen[key]} and {i} share the list-map key {dict(zip(keys, key))}"
                )
            seen[key] = i


_CRDValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type}
)
_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@pytest.fixture(scope="module")
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> structural schema, for every served version of every CRD."""
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")) if CRD_DIR.is_dir() else []:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served", True):
                    schema = _structural(version["schema"]["openAPIV3Schema"])
                    schemas[(f"{group}/{version['name']}", kind)] = schema
    if not {("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob")} <= set(schemas):
        msg = (
            f"KubeRay v1.7.0 CRDs (RayCluster, RayJob) not found in {CRD_DIR}: get them with "
            "`helm pull kuberay/kuberay-operator --version 1.7.0 --untar` (its crds/) and "
            "set CPSWEEP_K8S_CRDS to that directory"
        )
        if _in_ci():
            pytest.fail(f"{msg}; CI keeps them in ../shared/k8s-crds")
        pytest.skip(msg)
    return schemas


def _schema_errors(obj: Obj, crd_schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas:
        validator = _CRDValidator(crd_schemas[key], format_checker=_FORMATS)
        return [
            f"{_name(obj)}: .{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
    if obj["apiVersion"].startswith("ray.io/"):
        return [f"{_name(obj)}: no KubeRay CRD in {CRD_DIR} serves {obj['apiVersion']}"]
    try:  # core kinds; an unknown kind raises SchemaNotFoundError
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{_name(obj)}: .{'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{_name(obj)}: {e.message}"]
    return []


def test_every_object_validates_against_its_schema(
    rendered: list[Obj], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    errors = [err for obj in rendered for err in _schema_errors(obj, crd_schemas)]
    assert not errors, "\n".join(errors)
    kinds = {o["kind"] for o in rendered}
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "NetworkPolicy"} <= kinds
    assert all(
        o["metadata"].get("namespace") == "cpsweep" for o in rendered if o["kind"] != "Namespace"
    )


def test_schema_validation_rejects_broken_objects(
    rendered: list[Obj], crd_schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """The validation above is not vacuous: typical mistakes in each kind are caught."""
    cluster = _one(rendered, "RayCluster")
    typo = copy.deepcopy(cluster)
    typo["spec"]["headGroupSpec"]["rayStartParam"] = {}  # misspelt field
    wrong_type = copy.deepcopy(cluster)
    wrong_type["spec"]["workerGroupSpecs"][0]["minReplicas"] = "zero"
    bad_enum = copy.deepcopy(cluster)
    bad_enum["spec"]["authOptions"]["mode"] = "password"
    twin = copy.deepcopy(cluster)
    containers = twin["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    containers.append(copy.deepcopy(containers[0]))  # two containers with one name
    bad_quantity = copy.deepcopy(cluster)
    head = bad_quantity["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"]["limits"]["memory"] = "16 gigs"
    overflow = copy.deepcopy(cluster)
    overflow["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 2**31  # format: int32
    for broken in (typo, wrong_type, bad_enum, twin, bad_quantity, overflow):
        assert _schema_errors(broken, crd_schemas), "a broken RayCluster validated"
    port_name = copy.deepcopy(cluster)  # int-or-string accepts both forms
    ports = port_name["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert not _schema_errors(port_name, crd_schemas)
    ports[0]["containerPort"] = "6379"
    assert _schema_errors(port_name, crd_schemas), "containerPort is an integer, not a string"

    job = copy.deepcopy(_one(rendered, "RayJob"))
    job["spec"]["entrypoints"] = job["spec"].pop("entrypoint")
    assert _schema_errors(job, crd_schemas)

    deployment = copy.deepcopy(_one(rendered, "Deployment", "cpsweep-service"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert _schema_errors(deployment, crd_schemas)


# -- exposure ------------------------------------------------------------------------------


def test_no_service_leaves_the_cluster(rendered: list[Obj]) -> None:
    for svc in (o for o in rendered if o["kind"] == "Service"):
        spec = svc["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", f"{_name(svc)} is {spec['type']}"
        assert not spec.get("externalIPs"), f"{_name(svc)} has externalIPs"
        assert all("nodePort" not in p for p in spec.get("ports", [])), _name(svc)


def test_no_ingress_or_gateway(rendered: list[Obj]) -> None:
    exposing = {"Ingress", "Route", "Gateway", "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"}
    assert not [_name(o) for o in rendered if o["kind"] in exposing]


def test_ray_dashboard_only_on_a_cluster_ip_service(rendered: list[Obj]) -> None:
    """KubeRay creates the head Service from headGroupSpec: it must stay ClusterIP with no
    Ingress, and no Service of ours may publish the dashboard any other way."""
    cluster = _one(rendered, "RayCluster")
    head = cluster["spec"]["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    ray_ports = head["template"]["spec"]["containers"][0]["ports"]
    assert {p["containerPort"] for p in ray_ports if p.get("name") == "dashboard"} == {8265}
    for svc in (o for o in rendered if o["kind"] == "Service"):
        for port in svc["spec"].get("ports", []):
            if 8265 in (port.get("port"), port.get("targetPort")) or port.get("targetPort") == (
                "dashboard"
            ):
                assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", _name(svc)
    for job in (o for o in rendered if o["kind"] == "RayJob"):
        assert "rayClusterSpec" not in job["spec"], "RayJobs submit to the shared cluster"


# -- NetworkPolicies, evaluated against the pods the manifests create ----------------------


@dataclass
class _Pod:
    name: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # container port name -> number
    numbers: set[int] = field(default_factory=set)


def _pod_from_template(name: str, template: Obj, base: dict[str, str] | None = None) -> _Pod:
    labels = dict(base or {})
    for key, value in template.get("metadata", {}).get("labels", {}).items():
        # KubeRay refuses to let templates override these three (pod.go labelPod).
        if key not in ("ray.io/cluster", "ray.io/node-type", "ray.io/group") or not base:
            labels[key] = value
    pod = _Pod(name, labels)
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            pod.numbers.add(port["containerPort"])
            if "name" in port:
                pod.ports[port["name"]] = port["containerPort"]
    return pod


def _pods(rendered: list[Obj]) -> list[_Pod]:
    """Every pod the manifests lead to, labelled as the controllers label them."""
    pods = []
    for obj in rendered:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            pods.append(_pod_from_template(_name(obj), spec["template"]))
        elif obj["kind"] == "RayCluster":
            cluster = obj["metadata"]["name"]
            groups = [("headgroup", "head", spec["headGroupSpec"])]
            groups += [(g["groupName"], "worker", g) for g in spec.get("workerGroupSpecs", [])]
            for group, node_type, group_spec in groups:
                base = {
                    "ray.io/cluster": cluster,
                    "ray.io/node-type": node_type,
                    "ray.io/group": group,
                    "ray.io/is-ray-node": "yes",
                    "app.kubernetes.io/name": "kuberay",
                    "app.kubernetes.io/created-by": "kuberay-operator",
                }
                pods.append(_pod_from_template(f"{cluster}/{group}", group_spec["template"], base))
        elif obj["kind"] == "RayJob" and "submitterPodTemplate" in spec:
            base = {"ray.io/originated-from-crd": "RayJob"}
            pods.append(
                _pod_from_template(f"{_name(obj)}/submitter", spec["submitterPodTemplate"], base)
            )
    return pods


def _selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


_OPERATOR_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NAMESPACE}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "kuberay-operator"}},
}


def _source(peer: Obj | None) -> str:
    """Classify an ingress peer: `namespace` (pods of this namespace), `operator` (the
    KubeRay operator's pods, pinned by namespace name) or `external` (anything wider)."""
    if peer is None or "ipBlock" in peer:
        return "external"
    if "namespaceSelector" not in peer:
        return "namespace"
    return "operator" if peer == _OPERATOR_PEER else "external"


def _ingress(rendered: list[Obj], pod: _Pod) -> dict[str, set[int | str]] | None:
    """source class -> ports open on this pod ("*" = every port); None if not isolated."""
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], pod.labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return None
    opened: dict[str, set[int | str]] = {}
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports: set[int | str] = set()
            for port in rule.get("ports") or [{"port": "*"}]:
                number = port.get("port", "*")
                ports.add(pod.ports.get(number, number) if isinstance(number, str) else number)
            for peer in rule.get("from") or [None]:  # no `from`: every source
                opened.setdefault(_source(peer), set()).update(ports)
    return opened


def test_default_deny_isolates_every_pod(rendered: list[Obj]) -> None:
    deny = [
        p
        for p in rendered
        if p["kind"] == "NetworkPolicy"
        and p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"].get("policyTypes", [])
        and not p["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress NetworkPolicy (podSelector {}, no ingress rules)"
    pods = _pods(rendered)
    assert len(pods) >= 7, [p.name for p in pods]
    for pod in pods:
        assert _ingress(rendered, pod) is not None, f"{pod.name} is not isolated"


def test_nothing_is_reachable_from_outside_the_namespace(rendered: list[Obj]) -> None:
    """Before: the API's port 8000 was open to every pod of every namespace."""
    public: dict[str, set[int | str]] = {}
    for pod in _pods(rendered):
        opened = _ingress(rendered, pod) or {}
        if "external" in opened:
            public[pod.name] = opened["external"]
    assert public == PUBLIC_PORTS


def test_ray_head_ports_only_from_the_namespace(rendered: list[Obj]) -> None:
    heads = [p for p in _pods(rendered) if p.labels.get("ray.io/node-type") == "head"]
    assert len(heads) == 1
    head = heads[0]
    assert head.numbers >= RAY_HEAD_PORTS
    opened = _ingress(rendered, head)
    assert opened is not None
    assert "external" not in opened, f"Ray head reachable from outside on {opened['external']}"
    assert opened.get("operator", set()) <= {8265}, "the operator needs the dashboard only"
    assert "*" in opened["namespace"] or opened["namespace"] >= RAY_HEAD_PORTS
    for worker in (p for p in _pods(rendered) if p.labels.get("ray.io/node-type") == "worker"):
        assert set(_ingress(rendered, worker) or {"unisolated": set()}) == {"namespace"}


def test_postgres_only_from_mlflow(rendered: list[Obj]) -> None:
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    postgres = next(
        p for p in _pods(rendered) if p.labels.get("app.kubernetes.io/name") == "postgres"
    )
    opened = _ingress(rendered, postgres)
    assert opened == {"namespace": {5432}}
    peers = [
        peer
        for policy in policies
        if _selects(policy["spec"]["podSelector"], postgres.labels)
        for rule in policy["spec"].get("ingress", [])
        for peer in rule.get("from") or [None]
    ]
    assert peers == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]


# -- secrets, limits, security contexts ----------------------------------------------------


def _pod_specs(rendered: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for obj in rendered:
        spec = obj.get("spec", {})
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield _name(obj), spec["template"]["spec"]
        elif obj["kind"] == "RayCluster":
            yield f"{_name(obj)}/head", spec["headGroupSpec"]["template"]["spec"]
            for group in spec.get("workerGroupSpecs", []):
                yield f"{_name(obj)}/{group['groupName']}", group["template"]["spec"]
        elif obj["kind"] == "RayJob" and "submitterPodTemplate" in spec:
            yield f"{_name(obj)}/submitter", spec["submitterPodTemplate"]["spec"]


def _containers(rendered: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    for where, pod_spec in _pod_specs(rendered):
        for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
            yield f"{where}/{container['name']}", container, pod_spec


_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)


def test_service_takes_its_tokens_from_secrets(rendered: list[Obj]) -> None:
    deployment = _one(rendered, "Deployment", "cpsweep-service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["cpsweep", "serve"]
    env = {e["name"]: e for e in container["env"]}
    secrets = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Secret"}
    # `cpsweep serve` reads its API token from the environment only.
    assert "value" not in env["CPSWEEP_API_TOKEN"], "CPSWEEP_API_TOKEN is a literal"
    ref = env["CPSWEEP_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = secrets[ref["name"]]
    assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}
    # The Ray token as a file (Ray's RAY_AUTH_TOKEN_PATH), not in the environment.
    assert "RAY_AUTH_TOKEN" not in env
    assert _mounted_secret(deployment["spec"]["template"]["spec"], container,
                           env["RAY_AUTH_TOKEN_PATH"]["value"]) == ("cpsweep-ray-auth",
                                                                    "auth_token")  # fmt: skip
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    head_svc = f"{RAY_CLUSTER}-head-svc"  # KubeRay's name for the head Service
    assert env["RAY_ADDRESS"]["value"] == f"http://{head_svc}:8265"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"


def test_no_credential_is_a_literal(rendered: list[Obj]) -> None:
    literal = [
        f"{where}: {e['name']}"
        for where, container, _ in _containers(rendered)
        for e in container.get("env", [])
        if _SECRET_NAME.search(e["name"])
        and "value" in e
        and e["name"] != "RAY_AUTH_MODE"
        and not e["name"].endswith("_PATH")  # where a mounted secret file is
    ]
    assert not literal, f"credentials must come from Secrets: {literal}"
    args = [
        f"{where}: {arg}"
        for where, container, _ in _containers(rendered)
        for arg in container.get("command", []) + container.get("args", [])
        if re.search(r"://[^/\s]*:[^/\s]*@", str(arg))  # user:password@ in a URI
    ]
    assert not args, f"credentials in a command line: {args}"


def test_every_container_has_limits(rendered: list[Obj]) -> None:
    missing = [
        where
        for where, container, _ in _containers(rendered)
        if not {"cpu", "memory"} <= set(container.get("resources", {}).get("limits", {}))
        or not {"cpu", "memory"} <= set(container.get("resources", {}).get("requests", {}))
    ]
    autoscaler = _one(rendered, "RayCluster")["spec"].get("autoscalerOptions", {})
    if not {"cpu", "memory"} <= set(autoscaler.get("resources", {}).get("limits", {})):
        missing.append("RayCluster autoscaler sidecar")
    assert not missing, f"containers without cpu/memory requests and limits: {missing}"


def test_containers_run_unprivileged(rendered: list[Obj]) -> None:
    problems = []
    for where, container, pod_spec in _containers(rendered):
        pod_ctx, ctx = pod_spec.get("securityContext", {}), container.get("securityContext", {})
        if not ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation")
        if "ALL" not in ctx.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities.drop ALL")
        if ctx.get("privileged"):
            problems.append(f"{where}: privileged")
    assert not problems, problems
    service = _one(rendered, "Deployment", "cpsweep-service")["spec"]["template"]["spec"]
    assert service["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert service.get("automountServiceAccountToken") is False


# -- the contract with the application -----------------------------------------------------


def _project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def test_ray_cluster_matches_the_app(rendered: list[Obj]) -> None:
    cluster = _one(rendered, "RayCluster", RAY_CLUSTER)
    spec = cluster["spec"]
    assert spec["rayVersion"] == pinned_version("ray")
    assert spec["authOptions"]["mode"] == "token"
    secret = _one(rendered, "Secret", spec["authOptions"]["secretName"])
    assert "auth_token" in {**secret.get("data", {}), **secret.get("stringData", {})}
    head = spec["headGroupSpec"]
    # Trial drivers hold a custom `trial_driver` resource instead of a CPU.
    assert float(head["resources"]["trial_driver"]) >= 1
    assert not {"num-cpus", "resources", "memory", "num-gpus"} & set(head["rayStartParams"])
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        assert group["maxReplicas"] >= 1
    gpu = groups["gpu"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
    for where, container, _ in _containers(rendered):
        if where.startswith("RayCluster/"):
            image = container["image"].split("@")[0]
            assert image == ("cpsweep/ray-gpu" if "/gpu/" in where else "cpsweep/ray"), where


def test_base_images_carry_the_project_version(base: list[Obj]) -> None:
    version = _project_version()
    images = {where: c["image"] for where, c, _ in _containers(base)}
    assert images["RayCluster/cpsweep-ray/head/ray-head"] == f"cpsweep/ray:{version}"
    assert images["RayCluster/cpsweep-ray/cpu/ray-worker"] == f"cpsweep/ray:{version}"
    assert images["RayCluster/cpsweep-ray/gpu/ray-worker"] == f"cpsweep/ray-gpu:{version}"
    assert images["Deployment/mlflow/mlflow"] == f"cpsweep/mlflow:{version}"


def test_rayjob_runs_the_fashion_mnist_sweep_on_the_cluster(rendered: list[Obj]) -> None:
    job = _one(rendered, "RayJob")["spec"]
    assert job["clusterSelector"] == {"ray.io/cluster": RAY_CLUSTER}
    assert job["entrypoint"].startswith("cpsweep run search_spaces/fashion_mnist.yaml ")
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert runtime_env["working_dir"] == "/app"  # the repo in the image: cwd of the driver
    pod = job["submitterPodTemplate"]["spec"]
    submitter = pod["containers"][0]
    env = {e["name"]: e for e in submitter["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    path = env["RAY_AUTH_TOKEN_PATH"]["value"]
    assert _mounted_secret(pod, submitter, path) == ("cpsweep-ray-auth", "auth_token")


def test_mlflow_server_uses_postgres_and_proxied_artifacts(rendered: list[Obj]) -> None:
    pod = _one(rendered, "Deployment", "mlflow")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("cpsweep/mlflow@sha256:")
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    flags = {a.removeprefix("--") for a in container["args"] if "=" not in a}
    assert args["backend-store-uri"].startswith("postgresql+psycopg2://postgres:5432/")
    assert "serve-artifacts" in flags
    assert args["artifacts-destination"] == "/mlartifacts"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/mlartifacts"]]["persistentVolumeClaim"]["claimName"]
    _one(rendered, "PersistentVolumeClaim", claim)
    hosts = args["allowed-hosts"].split(",")
    assert {"mlflow", "mlflow:5000", "mlflow.cpsweep.svc.cluster.local:5000"} <= set(hosts)
    assert "*" not in hosts
    env = {e["name"]: e for e in container["env"]}
    for var in ("PGUSER", "PGPASSWORD"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-db"
    service = _one(rendered, "Service", "mlflow")
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]


def test_postgres_is_a_statefulset_behind_a_headless_service(rendered: list[Obj]) -> None:
    sts = _one(rendered, "StatefulSet", "postgres")
    service = _one(rendered, "Service", sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert claims and claims <= mounts


# -- secrets in an overlay, digests, egress, tokens, auth, read-only roots -------


def test_the_base_holds_no_secret_and_the_overlay_needs_them_supplied(base: list[Obj]) -> None:
    """Before: secrets.yaml with REPLACE-ME values was in the base, and re-applying it
    reset real secrets to public placeholders."""
    assert not [_name(o) for o in base if o["kind"] == "Secret"]
    missing = _kustomize(REPO / "k8s" / "deploy")  # the checkout has no secrets/ files
    if (REPO / "k8s" / "deploy" / "secrets").exists():
        pytest.skip("k8s/deploy/secrets exists in this checkout (a real deployment)")
    assert missing.returncode != 0 and "secrets/" in missing.stderr
    assert "secrets/" in (REPO / "k8s" / "deploy" / ".gitignore").read_text()


def test_every_image_is_pinned_by_digest(rendered: list[Obj]) -> None:
    unpinned = [
        f"{where}: {c['image']}"
        for where, c, _ in _containers(rendered)
        if not re.search(r"@sha256:[0-9a-f]{64}$", c["image"])
    ]
    assert not unpinned, f"images not pinned by digest: {unpinned}"


def _egress(rendered: list[Obj], pod: _Pod) -> list[Obj] | None:
    """Egress rules of the policies selecting `pod`; None if its egress is not isolated."""
    selecting = [
        p
        for p in rendered
        if p["kind"] == "NetworkPolicy"
        and _selects(p["spec"]["podSelector"], pod.labels)
        and "Egress" in p["spec"].get("policyTypes", [])
    ]
    if not selecting:
        return None
    return [rule for p in selecting for rule in p["spec"].get("egress", [])]


def _reaches(rules: list[Obj], target: Obj, port: int) -> bool:
    for rule in rules:
        ports = {p.get("port") for p in rule.get("ports") or [{"port": None}]}
        if None not in ports and port not in ports:
            continue
        for peer in rule.get("to") or [None]:
            if peer is None or "ipBlock" in peer:
                continue  # checked separately: only the head's Kubernetes API rule
            if "namespaceSelector" not in peer and _selects(peer["podSelector"], target):
                return True
    return False


def test_egress_is_denied_by_default_with_the_needed_exceptions(rendered: list[Obj]) -> None:
    """Before: egress fully open."""
    pods = {p.name: p for p in _pods(rendered)}
    for pod in pods.values():
        assert _egress(rendered, pod) is not None, f"{pod.name}: egress not isolated"
    labels = {
        "service": {"app.kubernetes.io/name": "cpsweep-service"},
        "mlflow": {"app.kubernetes.io/name": "mlflow"},
        "postgres": {"app.kubernetes.io/name": "postgres"},
        "head": {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": "head"},
        "worker": {"ray.io/cluster": RAY_CLUSTER, "ray.io/node-type": "worker"},
        "user-job": {"app.kubernetes.io/name": "mlflow-tracking-user"},
    }
    by_role = {
        role: next(p for p in pods.values() if all(p.labels.get(k) == v for k, v in lab.items()))
        for role, lab in labels.items()
    }
    allowed = {
        ("service", "head", 8265), ("service", "mlflow", 5000), ("head", "mlflow", 5000),
        ("user-job", "mlflow", 5000), ("head", "worker", 12345), ("worker", "head", 6379),
        ("mlflow", "postgres", 5432),
    }  # fmt: skip
    for src, dst, port in allowed:
        rules = _egress(rendered, by_role[src]) or []
        assert _reaches(rules, labels[dst], port), f"{src} cannot reach {dst}:{port}"
    denied = {
        ("postgres", "mlflow", 5000), ("mlflow", "head", 8265), ("service", "postgres", 5432),
        ("worker", "mlflow", 5000),  # trials never log to MLflow; before: allowed
        ("user-job", "head", 8265),
    }  # fmt: skip
    for src, dst, port in denied:
        assert not _reaches(_egress(rendered, by_role[src]) or [], labels[dst], port), (src, dst)
    wide = [
        (p["metadata"]["name"], rule)
        for p in rendered
        if p["kind"] == "NetworkPolicy"
        for rule in p["spec"].get("egress", [])
        if any("ipBlock" in peer for peer in rule.get("to") or [])
    ]
    assert [name for name, _ in wide] == ["allow-ray-head-to-kubernetes-api"]
    assert {p["port"] for p in wide[0][1]["ports"]} == {443, 6443}


def test_mlflow_requires_authentication_and_only_cpsweep_pods_reach_it(
    rendered: list[Obj],
) -> None:
    """Before: no authentication, reachable from every pod of every namespace."""
    pod = _one(rendered, "Deployment", "mlflow")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "--app-name=basic-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-admin"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = _one(rendered, "ConfigMap", volumes[mounts[os.path.dirname(config_path)]][
        "configMap"]["name"])  # fmt: skip
    ini = configparser.ConfigParser()
    ini.read_string(config["data"][os.path.basename(config_path)])
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"
    auth_db = ini["mlflow"]["database_uri"].removeprefix("sqlite:///")
    assert not auth_db.startswith("/mlartifacts"), "user store inside the served artifacts"
    clients = {
        where: (c, pod) for where, c, pod in _containers(rendered)
        if any(e["name"] == "MLFLOW_TRACKING_URI" for e in c.get("env", []))
    }  # fmt: skip
    assert set(clients) == {
        "RayCluster/cpsweep-ray/head/ray-head",
        "Deployment/cpsweep-service/cpsweep-service",
    }, "only the sweep drivers (head) and the service talk to MLflow"
    for where, (c, pod) in clients.items():
        # MLflow's client reads ~/.mlflow/credentials when no env var names a user.
        home = {e["name"]: e.get("value") for e in c["env"]}["HOME"]
        secret = _mounted_secret(pod, c, f"{home}/.mlflow/credentials")
        assert secret == ("mlflow-tracking", "credentials"), where
    mlflow = next(p for p in _pods(rendered) if p.name == "Deployment/mlflow")
    assert set(_ingress(rendered, mlflow) or {}) == {"namespace"}


def test_service_account_tokens_and_read_only_roots(rendered: list[Obj]) -> None:
    """Before: Ray pods mounted the token; Ray containers had writable root filesystems."""
    for where, pod_spec in _pod_specs(rendered):
        if where.endswith("/head"):  # the autoscaler sidecar calls the Kubernetes API
            continue
        assert pod_spec.get("automountServiceAccountToken") is False, where
    for where, container, pod_spec in _containers(rendered):
        ctx = container.get("securityContext", {})
        assert ctx.get("readOnlyRootFilesystem") is True, where
        volumes = {v["name"] for v in pod_spec.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts and mounts["/tmp"] in volumes, f"{where}: no writable /tmp"


# -- who may call whom, probes, durable results, secrets per pod ---------------------------


def _mounted_secret(pod_spec: Obj, container: Obj, path: str) -> tuple[str, str] | None:
    """(Secret name, key) of the file at `path` in `container`, or None."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        below = os.path.relpath(path, mount["mountPath"])
        source = volumes.get(mount["name"], {}).get("secret")
        if below.startswith("..") or source is None:
            continue
        items = {i["path"]: i["key"] for i in source.get("items", [])}
        key = items.get(below, below if not items else None)
        if key is not None:
            return source["secretName"], key
    return None


def _namespace_labels(rendered: list[Obj]) -> dict[str, str]:
    namespace = _one(rendered, "Namespace")
    name = namespace["metadata"]["name"]
    return {**namespace["metadata"].get("labels", {}), "kubernetes.io/metadata.name": name}


def _admits(
    rendered: list[Obj],
    dst: _Pod,
    port: int,
    src: dict[str, str],
    src_namespace: dict[str, str] | None = None,
) -> bool:
    """Whether the ingress policies on `dst` let a pod labelled `src` reach `port`; the
    pod is in this namespace, or in one labelled `src_namespace`."""
    ns_labels = _namespace_labels(rendered) if src_namespace is None else src_namespace
    policies = [
        o
        for o in rendered
        if o["kind"] == "NetworkPolicy"
        and _selects(o["spec"]["podSelector"], dst.labels)
        and "Ingress" in o["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = {dst.ports.get(q.get("port"), q.get("port")) for q in rule.get("ports") or [{}]}
            if None not in ports and port not in ports:
                continue
            for peer in rule.get("from") or [None]:
                if peer is None or "ipBlock" in peer:
                    return True
                if "namespaceSelector" in peer:
                    if not _selects(peer["namespaceSelector"], ns_labels):
                        continue
                elif src_namespace is not None:
                    continue  # a bare podSelector means this namespace
                if "podSelector" not in peer or _selects(peer["podSelector"], src):
                    return True
    return False


def _pod_named(rendered: list[Obj], prefix: str) -> _Pod:
    return next(p for p in _pods(rendered) if p.name.startswith(prefix))


def test_api_only_from_labelled_clients(rendered: list[Obj]) -> None:
    """Before: `allow-cpsweep-service-ingress` had no `from`: port 8000 was open to every
    pod of every namespace."""
    api = _pod_named(rendered, "Deployment/cpsweep-service")
    assert _admits(rendered, api, 8000, API_CLIENT)
    assert not _admits(rendered, api, 8000, {"app": "anything-else"})
    assert not _admits(rendered, api, 8000, API_CLIENT, {"kubernetes.io/metadata.name": "web"})
    for pod in _pods(rendered):  # none of our own pods calls the API
        assert not _admits(rendered, api, 8000, pod.labels), pod.name


def test_the_documented_overlay_patch_admits_one_more_namespace(tmp_path: Path) -> None:
    """The commented `patches` of k8s/deploy/kustomization.yaml, uncommented, admit the
    labelled pods of that namespace and nothing else."""
    k8s = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", k8s, ignore=shutil.ignore_patterns("secrets"))
    (k8s / "deploy" / "secrets").mkdir()
    _supply_secrets(k8s / "deploy" / "secrets")
    kustomization = k8s / "deploy" / "kustomization.yaml"
    lines = kustomization.read_text().splitlines()
    start = lines.index("# patches:")
    block = []
    for line in lines[start:]:  # the commented block, up to its first uncommented line
        if not line.startswith("# "):
            break
        block.append(line.removeprefix("# "))
    kustomization.write_text("\n".join([*lines, *block]) + "\n")
    patched = _objects(_kustomize(k8s / "deploy"), "k8s/deploy with the API client patch")
    api = _pod_named(patched, "Deployment/cpsweep-service")
    ingress_ns = {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert _admits(patched, api, 8000, API_CLIENT, ingress_ns)
    assert not _admits(patched, api, 8000, {"app": "controller"}, ingress_ns)
    assert not _admits(patched, api, 8000, API_CLIENT, {"kubernetes.io/metadata.name": "x"})


def test_ray_ports_only_from_ray_pods_the_service_and_the_submitter(
    rendered: list[Obj],
) -> None:
    """Before: `allow-ray-from-namespace` opened every Ray port to every pod in the
    namespace (MLflow, PostgreSQL, anything deployed there later)."""
    head = _pod_named(rendered, f"{RAY_CLUSTER}/headgroup")
    worker = _pod_named(rendered, f"{RAY_CLUSTER}/cpu")
    for port in (*sorted(RAY_HEAD_PORTS), 12345):
        assert _admits(rendered, head, port, worker.labels), port
        assert _admits(rendered, worker, port, head.labels), port
    clients = [_pod_named(rendered, "Deployment/cpsweep-service"), _pod_named(rendered, "RayJob/")]
    for client in clients:
        assert _admits(rendered, head, 8265, client.labels), client.name
        for port in (6379, 10001):
            assert not _admits(rendered, head, port, client.labels), (client.name, port)
        assert not _admits(rendered, worker, 12345, client.labels), client.name
    others = [_pod_named(rendered, "Deployment/mlflow"), _pod_named(rendered, "StatefulSet/")]
    for other in [*others, _Pod("stranger", {"app": "debug-shell"})]:
        for port in sorted(RAY_HEAD_PORTS):
            assert not _admits(rendered, head, port, other.labels), (other.name, port)


def _service_container(rendered: list[Obj]) -> Obj:
    deployment = _one(rendered, "Deployment", "cpsweep-service")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_api_liveness_and_readiness_are_separate(rendered: list[Obj]) -> None:
    """Before: both probes hit /healthz, so a saturated server was restarted instead of
    taken out of the Service until it recovered."""
    container = _service_container(rendered)
    path = {p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
    assert path == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "too short a start"
    assert "initialDelaySeconds" not in container["livenessProbe"], "the startup probe gates it"


def test_api_has_a_pod_disruption_budget_it_can_meet(rendered: list[Obj]) -> None:
    deployment = _one(rendered, "Deployment", "cpsweep-service")
    budget = _one(rendered, "PodDisruptionBudget", "cpsweep-service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert _selects(budget["spec"]["selector"], labels)
    # minAvailable equal to the replicas would block every node drain.
    assert 1 <= budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def _claim_at(pod_spec: Obj, container: Obj, path: str) -> str | None:
    """The PersistentVolumeClaim behind `path` in `container` (the deepest mount), or None."""
    mounts = [m for m in container["volumeMounts"] if (path + "/").startswith(m["mountPath"] + "/")]
    if not mounts:
        return None
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod_spec["volumes"] if v["name"] == mount["name"])
    return volume.get("persistentVolumeClaim", {}).get("claimName")


def test_sweep_outputs_are_on_a_volume_every_ray_pod_shares(rendered: list[Obj]) -> None:
    """Before: CPSWEEP_RESULTS_DIR=/tmp/cpsweep-results on the head's emptyDir (lost with
    the pod) and the RayJob wrote into its working_dir copy. The trials on the workers
    write checkpoints into the sweep's directory too (Tune's and Train's storage_path), so
    it must be one ReadWriteMany volume at the same path in the head and every worker."""
    cluster = _one(rendered, "RayCluster")["spec"]
    head_spec = cluster["headGroupSpec"]["template"]["spec"]
    head = head_spec["containers"][0]
    results = {e["name"]: e.get("value") for e in head["env"]}["CPSWEEP_RESULTS_DIR"]
    claim = _claim_at(head_spec, head, results)
    assert claim, f"{results} is not on a PersistentVolumeClaim"
    pvc = _one(rendered, "PersistentVolumeClaim", claim)["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"] and pvc["resources"]["requests"]["storage"]
    for group in cluster["workerGroupSpecs"]:
        spec = group["template"]["spec"]
        assert _claim_at(spec, spec["containers"][0], results) == claim, group["groupName"]
    entrypoint = _one(rendered, "RayJob")["spec"]["entrypoint"]
    output = re.search(r"--output-dir[= ](\S+)", entrypoint)
    assert output and output.group(1).startswith(results + "/"), entrypoint


def test_every_emptydir_has_a_size_limit(rendered: list[Obj]) -> None:
    """Before: none had one, /dev/shm included (memory-backed, so it grew into RAM)."""
    unbounded = [
        f"{where}/{v['name']}"
        for where, pod_spec in _pod_specs(rendered)
        for v in pod_spec.get("volumes", [])
        if "emptyDir" in v and not v["emptyDir"].get("sizeLimit")
    ]
    assert not unbounded, f"emptyDirs without sizeLimit: {unbounded}"
    # KubeRay adds an unbounded `ray-logs` emptyDir at /tmp/ray to the head and its
    # autoscaler, and a `shared-mem` one at /dev/shm to every Ray container, unless the
    # path is mounted already: mount both ourselves.
    cluster = _one(rendered, "RayCluster")["spec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    autoscaler = cluster["autoscalerOptions"]
    assert "/tmp/ray" in {m["mountPath"] for m in head["volumeMounts"]}
    assert "/tmp/ray" in {m["mountPath"] for m in autoscaler["volumeMounts"]}
    for where, container, _ in _containers(rendered):
        if where.startswith("RayCluster/"):
            assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}, where


def test_autoscaler_sidecar_has_a_read_only_root(rendered: list[Obj]) -> None:
    cluster = _one(rendered, "RayCluster")["spec"]
    options = cluster["autoscalerOptions"]
    assert options["securityContext"]["readOnlyRootFilesystem"] is True
    head_volumes = {v["name"]: v for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in options["volumeMounts"]}
    assert "emptyDir" in head_volumes[mounts["/tmp"]], "the sidecar needs a writable /tmp"
    assert {e["name"]: e.get("value") for e in options["env"]}["HOME"] == "/tmp"


_ADMIN = "mlflow-admin"


def _secrets_used(pod_spec: Obj) -> set[str]:
    names = {v["secret"]["secretName"] for v in pod_spec.get("volumes", []) if "secret" in v}
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
    return names


def test_each_pod_gets_only_the_secrets_it_uses(rendered: list[Obj]) -> None:
    """Before: the MLflow admin's login was in the environment of the API, the head and
    every worker. Now the admin stays with the MLflow server and the Job that creates the
    tracking user; the head and the API log in as that user from a mounted file; workers
    and the submitter get no MLflow login; tokens are files where the consumer reads one."""
    used = {where: _secrets_used(spec) for where, spec in _pod_specs(rendered)}
    assert used == {
        "Deployment/mlflow": {"mlflow-db", _ADMIN},
        "Job/mlflow-tracking-user": {_ADMIN, "mlflow-tracking"},
        "StatefulSet/postgres": {"mlflow-db"},
        f"RayCluster/{RAY_CLUSTER}/head": {"mlflow-tracking"},
        f"RayCluster/{RAY_CLUSTER}/cpu": set(),
        f"RayCluster/{RAY_CLUSTER}/gpu": set(),
        "RayJob/cpsweep-fashion-mnist/submitter": {"cpsweep-ray-auth"},
        "Deployment/cpsweep-service": {"cpsweep-api-token", "cpsweep-ray-auth", "mlflow-tracking"},
    }  # KubeRay itself injects the Ray token into the Ray pods (authOptions.secretName).
    for where, container, _ in _containers(rendered):
        names = {e["name"] for e in container.get("env", [])}
        assert not names & {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}, where
    for name in ("mlflow-tracking", _ADMIN):
        assert any(o["metadata"]["name"] == name for o in rendered if o["kind"] == "Secret")


def test_mounted_secret_files_are_readable_by_the_container_user(rendered: list[Obj]) -> None:
    """A 0440 secret file belongs to root and the pod's fsGroup: without fsGroup the
    non-root user cannot read its token."""
    for where, pod_spec in _pod_specs(rendered):
        for volume in pod_spec.get("volumes", []):
            source = volume.get("secret") or volume.get("configMap")
            if source is None:
                continue
            mode = source.get("defaultMode", 0o644)
            readable_by_group = mode & 0o040 and pod_spec["securityContext"].get("fsGroup")
            assert mode & 0o004 or readable_by_group, f"{where}/{volume['name']}: mode {mode:o}"


def _configmap_file(rendered: list[Obj], pod_spec: Obj, volume: str, key: str) -> str:
    source = next(v for v in pod_spec["volumes"] if v["name"] == volume)["configMap"]
    return str(_one(rendered, "ConfigMap", source["name"])["data"][key])


def _secret_value(rendered: list[Obj], name: str, key: str) -> str:
    return base64.b64decode(_one(rendered, "Secret", name)["data"][key]).decode()


def test_tracking_user_job_makes_a_non_admin_user_on_a_real_server(
    rendered: list[Obj], tmp_path: Path
) -> None:
    """The Job's script (from the rendered ConfigMap) against MLflow's basic-auth app with
    the rendered settings and secrets: it creates the tracking user, a rerun sets the
    password again, and that user logs a run through ~/.mlflow/credentials but cannot read
    what the admin keeps to itself."""
    pytest.importorskip("flask_wtf", reason="MLflow's basic-auth app needs Flask-WTF: make venv")
    from tests.servers import base_env, free_port, wait_http

    job = _one(rendered, "Job", "mlflow-tracking-user")["spec"]["template"]["spec"]
    container = job["containers"][0]
    script = tmp_path / "mlflow-tracking-user.py"
    script.write_text(_configmap_file(rendered, job, "script", script.name))
    ini = configparser.ConfigParser()
    server = _one(rendered, "Deployment", "mlflow")["spec"]["template"]["spec"]
    ini.read_string(_configmap_file(rendered, server, "auth-config", "basic_auth.ini"))
    ini["mlflow"]["database_uri"] = f"sqlite:///{tmp_path}/auth.db"
    with (tmp_path / "basic_auth.ini").open("w") as f:
        ini.write(f)
    admin = {k: _secret_value(rendered, "mlflow-admin", k) for k in ("username", "password")}
    (tmp_path / "admin").mkdir()
    for key, value in admin.items():
        (tmp_path / "admin" / key).write_text(value)
    credentials = tmp_path / "home" / ".mlflow" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(_secret_value(rendered, "mlflow-tracking", "credentials"))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = base_env(
        MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_USERNAME=admin["username"],
        MLFLOW_AUTH_ADMIN_PASSWORD=admin["password"],
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
    )
    log = tmp_path / "mlflow.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(f"{url}/health", 240, proc=proc, log=log)
        job_env = {e["name"]: e["value"] for e in container["env"]}
        assert job_env["MLFLOW_URL"] == "http://mlflow:5000"
        job_env.update(
            MLFLOW_URL=url,
            MLFLOW_ADMIN_DIR=str(tmp_path / "admin"),
            MLFLOW_TRACKING_CREDENTIALS_PATH=str(credentials),
        )
        runs = [
            subprocess.run(
                [sys.executable, str(script)],
                env={**base_env(), **job_env},
                capture_output=True,
                text=True,
                timeout=120,
            )
            for _ in range(2)
        ]
        assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
        assert "'cpsweep' created" in runs[0].stdout
        assert "'cpsweep' password set" in runs[1].stdout
        check = (
            "import mlflow, sys\n"
            "mlflow.set_tracking_uri(sys.argv[1])\n"
            "mlflow.set_experiment('mine')\n"
            "with mlflow.start_run():\n"
            "    mlflow.log_metric('x', 1.0)\n"
            "try:\n"
            "    mlflow.get_experiment_by_name('admins-only')\n"
            "except mlflow.exceptions.MlflowException as e:\n"
            "    print('refused', e.get_http_status_code())\n"
        )
        as_admin = {"MLFLOW_TRACKING_USERNAME": admin["username"],
                    "MLFLOW_TRACKING_PASSWORD": admin["password"]}  # fmt: skip
        made = subprocess.run(
            [sys.executable, "-c", "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]);"
             " mlflow.create_experiment('admins-only')", url],
            env=base_env(**as_admin), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr[-2000:]
        tracked = subprocess.run(
            [sys.executable, "-c", check, url],
            env=base_env(HOME=str(tmp_path / "home")),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert tracked.returncode == 0, tracked.stderr[-2000:]
        assert "refused 403" in tracked.stdout, tracked.stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # its job runner and workers may linger
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
