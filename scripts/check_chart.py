"""Checks of the Helm chart helm/creditgate, run by scripts/check-chart in its virtual environment.

For the default values and each file in helm/creditgate/ci/: lint the chart and render it with
the Helm Go SDK (helm-python-sdk, imported as helm_python), yamllint the rendered YAML, validate
every manifest offline with kubernetes-validate (the ServiceMonitor, a CRD it has no schema for,
gets a minimal shape check of our own), parse the rendered creditgate.toml and check its keys
against the config structs of src/config/ (unknown keys are an error for the binary) and that
its TLS paths and the probe's files lie in mounted Secrets. Then: values that must fail to render
(more than one replica without Redis and PostgreSQL), values the schema must refuse, the schema
against src/config/, and the sidecar templates included from a parent chart.

Prints one line per check and a closing "N passed, N failed"; exits 1 when a check failed.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import re
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
import yaml
from yamllint import linter as yamllint_linter
from yamllint.config import YamlLintConfig

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
CHART = ROOT / "helm" / "creditgate"
CONFIG_DIR = ROOT / "src" / "config"
PRICE_RS = ROOT / "src" / "domain" / "price.rs"
POLICY_RS = ROOT / "src" / "policy.rs"

RELEASE = "cg"
NAMESPACE = "billing"
# The newest Kubernetes whose schemas kubernetes-validate ships (1.37 with 1.37.x).
KUBE_VERSION = kv_utils.latest_version()
# Keys of creditgate.toml the chart sets from its structured values; `config` may not hold them.
CHART_OWNED = {"listen", "admin_listen", "metrics_listen", "ext_authz_listen", "tls", "data_dir",
               "redis", "ledger"}
# The creditgate binary, if built: each rendered pod's command is run with --check-config.
BINARY = os.environ.get("CREDITGATE_BIN")

# Relaxed, but any finding fails; both sequence indentations are fine (toYaml does not indent).
YAMLLINT = YamlLintConfig(
    "extends: relaxed\n"
    "rules:\n"
    "  line-length: disable\n"
    "  indentation: {indent-sequences: whatever}\n"
)
DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")

results: list[tuple[str, bool]] = []


def check(name: str, fn: Callable[[], str | None]) -> Any:
    """Runs one check: it returns an optional note, or raises (AssertionError or any error)."""
    try:
        note = fn()
    except AssertionError as e:
        print(f"FAIL {name}: {e}", flush=True)
        results.append((name, False))
        return None
    except Exception as e:  # noqa: BLE001 - every error is a failed check
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        print(f"FAIL {name}: {detail}", flush=True)
        results.append((name, False))
        return None
    print(f"ok   {name}{f' ({note})' if note else ''}", flush=True)
    results.append((name, True))
    return note


# ---------------------------------------------------------------------------------------------
# The config structs of the binary, read from its source.

def rust_struct_fields(path: Path, name: str, optional: bool = False) -> list[str] | None:
    if path.is_dir():
        text = "\n".join(f.read_text() for f in sorted(path.glob("*.rs")))
    else:
        text = path.read_text() if path.exists() else ""
    m = re.search(r"pub struct " + re.escape(name) + r"\s*\{(.*?)\n\}", text, re.S)
    if m is None and optional:
        return None
    assert m, f"struct {name} not found in {path.relative_to(ROOT)}"
    return re.findall(r"^\s*pub (\w+):", m.group(1), re.M)


def policy_operations() -> set[str] | None:
    """The words a caller's operations may use: each Operation's name, and gate and admin."""
    if not POLICY_RS.exists():
        return None
    text = POLICY_RS.read_text()
    names = set(re.findall(r"Operation::\w+ => \"(\w+)\"", text))
    groups = set(re.findall(r"^\s*\"(\w+)\" => Some\(Operation::", text, re.M))
    return (names | groups) or None


def binary_config() -> dict[str, set[str]]:
    fields = {
        "": set(rust_struct_fields(CONFIG_DIR, "FileConfig")),
        "tls": set(rust_struct_fields(CONFIG_DIR, "TlsConfig")),
        "limits": set(rust_struct_fields(CONFIG_DIR, "LimitsConfig")),
        "ext_authz": set(rust_struct_fields(CONFIG_DIR, "ExtAuthzConfig")),
        "prices": set(rust_struct_fields(CONFIG_DIR, "PriceConfig")),
        "prices.per_unit": set(rust_struct_fields(CONFIG_DIR, "PerUnitConfig")),
        "prices.per_million_tokens.*": set(rust_struct_fields(PRICE_RS, "TokenPrice")),
        "webhooks": set(rust_struct_fields(CONFIG_DIR, "WebhookConfig")),
    }
    callers = rust_struct_fields(CONFIG_DIR, "CallerConfig", optional=True)
    if callers is not None:
        fields["callers"] = set(callers)
    return fields


KNOWN: dict[str, set[str]] = {}


def check_toml_keys(doc: dict[str, Any]) -> None:
    """Every key of the rendered file is one the binary knows, and no number is a float."""
    def unknown(where: str, table: dict[str, Any]) -> None:
        extra = set(table) - KNOWN[where]
        assert not extra, f"keys {sorted(extra)} in [{where or 'top level'}] are unknown to " \
                          f"the binary (src/config/)"

    unknown("", doc)
    for key in ("tls", "limits", "ext_authz"):
        if key in doc:
            assert isinstance(doc[key], dict), f"{key} is not a table"
            unknown(key, doc[key])
    for kind in ("prices", "webhooks", "callers"):
        items = doc.get(kind, [])
        assert isinstance(items, list), f"{kind} is not an array of tables"
        for item in items:
            assert isinstance(item, dict), f"{kind} holds a {type(item).__name__}, not a table"
            if kind in KNOWN:
                unknown(kind, item)
            if kind == "prices":
                if "per_unit" in item:
                    unknown("prices.per_unit", item["per_unit"])
                for model in item.get("per_million_tokens", {}).values():
                    unknown("prices.per_million_tokens.*", model)

    def no_floats(path: str, value: Any) -> None:
        # The one setting that is a fraction.
        assert not isinstance(value, float) or path == "otlp_sample_ratio", \
            f"{path} = {value!r} is a float: creditgate's settings are integers or strings"
        if isinstance(value, dict):
            for k, v in value.items():
                no_floats(f"{path}.{k}" if path else k, v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                no_floats(f"{path}[{i}]", v)

    no_floats("", doc)


# ---------------------------------------------------------------------------------------------
# Rendering and the rendered objects.

def load_values(path: Path | None) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The values as Helm reads them (for the SDK), and as plain YAML (for comparisons)."""
    if path is None:
        return None, {}
    text = path.read_text()
    return helm.values_from_yaml(text), yaml.safe_load(text) or {}


def render(chart_path: Path, values: dict[str, Any] | None) -> dict[str, str]:
    with helm.Chart.load(chart_path) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests_of(rendered: dict[str, str]) -> list[tuple[str, str]]:
    return [(path, text) for path, text in sorted(rendered.items())
            if path.endswith((".yaml", ".yml")) and text.strip()]


def objects_of(rendered: dict[str, str]) -> list[dict[str, Any]]:
    objects = []
    for path, text in manifests_of(rendered):
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__file", path)
                objects.append(doc)
    return objects


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__file"}


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def creditgate_container(pod_spec: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
             if c.get("name") == "creditgate"]
    assert len(found) == 1, f"expected one container named creditgate, found {len(found)}"
    return found[0]


def rendered_toml(objects: list[dict[str, Any]]) -> dict[str, Any]:
    maps = [o for o in objects if o.get("kind") == "ConfigMap"
            and "creditgate.toml" in (o.get("data") or {})]
    assert len(maps) == 1, f"expected one ConfigMap with creditgate.toml, found {len(maps)}"
    return tomllib.loads(maps[0]["data"]["creditgate.toml"])


def mounted_file(pod_spec: dict[str, Any], container: dict[str, Any], path: str,
                 source: str) -> dict[str, Any]:
    """The volume a file lies in: mounted read-only from a `source` (secret, configMap)."""
    directory, name = posixpath.split(path)
    mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == directory]
    assert mounts, f"{path}: nothing is mounted at {directory}"
    mount = mounts[0]
    assert mount.get("readOnly") is True, f"{path}: {directory} is not mounted read-only"
    volumes = [v for v in pod_spec.get("volumes", []) if v["name"] == mount["name"]]
    assert volumes, f"{path}: no volume {mount['name']}"
    volume = volumes[0]
    assert source in volume, f"{path}: volume {mount['name']} is not a {source} volume"
    items = volume[source].get("items")
    if items:
        assert name in [i["path"] for i in items], \
            f"{path}: the {source} volume {mount['name']} does not project {name}"
    return volume


# ---------------------------------------------------------------------------------------------
# Checks of one rendering.

def lint_check(values: dict[str, Any] | None) -> str:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    assert not bad and not report.get("errors"), \
        "; ".join(f"{m.get('path')}: {m.get('error', '').strip()}" for m in bad) or \
        "; ".join(report.get("errors", []))
    infos = [m.get("error", "").strip() for m in report.get("messages", [])]
    return f"{len(infos)} info: {', '.join(infos)}" if infos else ""


def yamllint_check(rendered: dict[str, str]) -> str:
    problems = [f"{path}:{p.line}:{p.column} {p.level} {p.desc} ({p.rule})"
                for path, text in manifests_of(rendered)
                for p in yamllint_linter.run(text, YAMLLINT)]
    assert not problems, "; ".join(problems)
    return f"{len(manifests_of(rendered))} files"


def service_monitor_shape(sm: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    """kubernetes-validate has no schema for this CRD: the fields the chart sets, checked here."""
    assert sm.get("apiVersion") == "monitoring.coreos.com/v1", "apiVersion"
    meta = sm.get("metadata") or {}
    assert isinstance(meta.get("name"), str) and meta["name"], "metadata.name"
    assert all(isinstance(v, str) for v in (meta.get("labels") or {}).values()), "labels"
    spec = sm.get("spec") or {}
    assert set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, \
        f"unexpected spec fields {sorted(spec)}"
    labels = (spec.get("selector") or {}).get("matchLabels")
    assert isinstance(labels, dict) and labels, "spec.selector.matchLabels"
    services = [o for o in objects if o.get("kind") == "Service"
                and labels.items() <= (o["metadata"].get("labels") or {}).items()]
    assert len(services) == 1, "spec.selector does not select the chart's Service"
    port_names = {p["name"] for p in services[0]["spec"]["ports"]}
    endpoints = spec.get("endpoints")
    assert isinstance(endpoints, list) and endpoints, "spec.endpoints"
    for e in endpoints:
        assert set(e) <= {"port", "path", "scheme", "interval", "scrapeTimeout"}, \
            f"unexpected endpoint fields {sorted(e)}"
        assert e.get("port") in port_names, f"endpoint port {e.get('port')} is not a Service port"
        assert str(e.get("path", "/metrics")).startswith("/"), "endpoint path"
        assert e.get("scheme", "http") in ("http", "https"), "endpoint scheme"
        for key in ("interval", "scrapeTimeout"):
            if key in e:
                assert DURATION.match(str(e[key])), f"endpoint {key} {e[key]!r}"


def kube_validate_check(objects: list[dict[str, Any]]) -> str:
    kinds = []
    for obj in objects:
        if obj.get("kind") == "ServiceMonitor":
            service_monitor_shape(obj, objects)
            kinds.append("ServiceMonitor (own shape check)")
            continue
        try:
            kubernetes_validate.validate(strip(obj), KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']} ({obj['__file']}): "
                                 f"{where}: {e.message}") from None
        kinds.append(obj["kind"])
    assert kinds, "nothing rendered"
    return f"Kubernetes {KUBE_VERSION}: {', '.join(kinds)}"


def toml_check(objects: list[dict[str, Any]], plain_values: dict[str, Any],
               merged: dict[str, Any]) -> str:
    doc = rendered_toml(objects)
    check_toml_keys(doc)
    # The free-form config comes through as it was written: arrays of tables included.
    for key, value in (plain_values.get("config") or {}).items():
        assert doc.get(key) == value, f"config.{key} renders as {doc.get(key)!r}, not {value!r}"
    sidecar = merged["mode"] == "sidecar"
    host = "127.0.0.1" if sidecar else "0.0.0.0"
    ports = merged["ports"]
    expect = {"listen": f"{host}:{ports['grpc']}", "admin_listen": f"{host}:{ports['admin']}"}
    if merged["extAuthz"]["enabled"]:
        expect["ext_authz_listen"] = f"{host}:{ports['extAuthz']}"
    if merged["metrics"]["enabled"]:
        metrics_host = merged["sidecar"]["metricsHost"] if sidecar else "0.0.0.0"
        expect["metrics_listen"] = f"{metrics_host}:{ports['metrics']}"
    else:
        expect["metrics_listen"] = "off"
    for key, value in expect.items():
        assert doc.get(key) == value, f"{key} is {doc.get(key)!r}, not {value!r}"
    for key in ("ext_authz_listen",):
        if key not in expect:
            assert key not in doc, f"{key} is set though it is off"
    assert "redis" not in doc and "ledger" not in doc, \
        "a Redis or ledger URL is in the ConfigMap: URLs carry passwords, they go in Secrets"
    assert doc.get("data_dir") == merged["persistence"]["mountPath"], "data_dir"
    return f"keys: {', '.join(sorted(doc))}"


def pod_check(objects: list[dict[str, Any]], merged: dict[str, Any]) -> str:
    deployment = one(objects, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    container = creditgate_container(spec)
    doc = rendered_toml(objects)
    notes = []

    # The config file: --config names the mounted ConfigMap.
    args = container.get("args", [])
    config_path = args[args.index("--config") + 1]
    volume = mounted_file(spec, container, config_path, "configMap")
    config_maps = [o["metadata"]["name"] for o in objects if o.get("kind") == "ConfigMap"]
    assert volume["configMap"]["name"] in config_maps, "--config is not the chart's ConfigMap"

    # TLS files lie in Secrets mounted read-only.
    tls = doc.get("tls")
    if merged["tls"]["enabled"]:
        assert tls, "tls.enabled but no [tls] in creditgate.toml"
        assert set(tls) >= {"cert", "key"}, "[tls] needs cert and key"
        assert ("client_ca" in tls) == bool(merged["tls"]["mutual"]), "[tls] client_ca vs mutual"
        for key, path in tls.items():
            mounted_file(spec, container, path, "secret")
        notes.append("tls paths in secrets: " + ", ".join(sorted(tls.values())))
    else:
        assert tls is None, "[tls] rendered though tls.enabled is false"

    # Redis and ledger URLs only from Secrets.
    env = {e["name"]: e for e in container.get("env", [])}
    for what, var in (("redis", "CREDITGATE_REDIS"), ("ledger", "CREDITGATE_LEDGER")):
        given = merged[what]["url"] or merged[what]["existingSecret"]["name"]
        if given:
            assert var in env, f"{var} missing"
            ref = env[var].get("valueFrom", {}).get("secretKeyRef")
            assert ref and "value" not in env[var], f"{var} is not from a Secret"
            if merged[what]["existingSecret"]["name"]:
                assert ref["name"] == merged[what]["existingSecret"]["name"], f"{var} Secret name"
                assert ref["key"] == merged[what]["existingSecret"]["key"], f"{var} Secret key"
            else:
                secrets = [o for o in objects if o.get("kind") == "Secret"
                           and o["metadata"]["name"] == ref["name"]]
                assert secrets and ref["key"] in secrets[0].get("stringData", {}), \
                    f"{var}: the chart's Secret does not hold {ref['key']}"
        else:
            assert var not in env, f"{var} set though no {what} is given"

    # Probes: Kubernetes' gRPC probe without TLS, `creditgate health` with TLS or as a sidecar.
    readiness = container.get("readinessProbe") or {}
    sidecar = merged["mode"] == "sidecar"
    if merged["tls"]["enabled"] or sidecar:
        command = (readiness.get("exec") or {}).get("command") or []
        assert command[:2] == ["creditgate", "health"], f"readiness probe {command}"
        server = command[command.index("--server") + 1]
        scheme = "https" if merged["tls"]["enabled"] else "http"
        assert server.startswith(f"{scheme}://") and server.endswith(f":{merged['ports']['grpc']}"), \
            f"probe --server {server}"
        for flag in ("--ca-cert", "--client-cert", "--client-key"):
            if flag in command:
                mounted_file(spec, container, command[command.index(flag) + 1], "secret")
        if merged["tls"]["enabled"]:
            assert "--ca-cert" in command, "TLS probe without --ca-cert"
        if merged["tls"]["mutual"]:
            assert "--client-cert" in command and "--client-key" in command, \
                "mutual TLS probe without a client certificate"
        notes.append("probe: " + " ".join(command))
    else:
        assert readiness.get("grpc", {}).get("port") == merged["ports"]["grpc"], \
            f"readiness probe {readiness}"
        notes.append(f"probe: grpc port {readiness['grpc']['port']}")

    # Hardening.
    sc = container.get("securityContext") or {}
    assert sc.get("runAsNonRoot") is True, "runAsNonRoot"
    assert sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem"
    assert sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation"
    assert "ALL" in (sc.get("capabilities") or {}).get("drop", []), "capabilities.drop ALL"
    assert container.get("resources", {}).get("requests"), "resource requests"
    assert spec.get("automountServiceAccountToken") is False, "automountServiceAccountToken"

    # Mode: what is rendered, and where.
    kinds = sorted(o["kind"] for o in objects)
    shared = all(merged[w]["url"] or merged[w]["existingSecret"]["name"] for w in ("redis", "ledger"))
    strategy = deployment["spec"].get("strategy", {}).get("type", "RollingUpdate")
    assert (strategy == "Recreate") == (not shared), f"strategy {strategy} with shared={shared}"
    assert deployment["spec"]["replicas"] == merged["replicas"], "replicas"
    if sidecar:
        names = [c["name"] for c in spec["containers"]]
        assert merged["sidecar"]["workload"]["name"] in names, "the workload container is missing"
        in_init = container in spec.get("initContainers", [])
        assert in_init == bool(merged["sidecar"]["native"]), "native sidecar placement"
        if in_init:
            assert container.get("restartPolicy") == "Always", "native sidecar restartPolicy"
        assert "Service" not in kinds and "PodDisruptionBudget" not in kinds, kinds
    else:
        service = one(objects, "Service")
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        want = {"grpc": merged["ports"]["grpc"], "grpc-admin": merged["ports"]["admin"]}
        if merged["extAuthz"]["enabled"]:
            want["grpc-ext-authz"] = merged["ports"]["extAuthz"]
        if merged["metrics"]["enabled"]:
            want["http-metrics"] = merged["ports"]["metrics"]
        assert ports == want, f"Service ports {ports}, want {want}"
        assert ("PodDisruptionBudget" in kinds) == merged["podDisruptionBudget"]["enabled"], "PDB"
        assert ("ServiceMonitor" in kinds) == merged["metrics"]["serviceMonitor"]["enabled"], "SM"
    notes.insert(0, f"{', '.join(kinds)}")
    return "; ".join(notes)


def check_values_file(label: str, path: Path | None, given: dict[str, Any] | None = None) -> None:
    values, plain = load_values(path)
    if given is not None:
        values, plain = given, given
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
    check(f"{label}: helm lint (strict)", lambda: lint_check(values))
    try:
        rendered = render(CHART, values)
        print(f"ok   {label}: render ({len(manifests_of(rendered))} manifests)", flush=True)
        results.append((f"{label}: render", True))
    except helm.HelmError as e:
        print(f"FAIL {label}: render: {e}", flush=True)
        results.append((f"{label}: render", False))
        return
    objects = objects_of(rendered)
    check(f"{label}: yamllint (relaxed)", lambda: yamllint_check(rendered))
    check(f"{label}: kubernetes-validate", lambda: kube_validate_check(objects))
    check(f"{label}: creditgate.toml", lambda: toml_check(objects, plain, merged))
    check(f"{label}: pod", lambda: pod_check(objects, merged))
    if BINARY:
        check(f"{label}: creditgate serve --check-config", lambda: binary_check(objects))


def binary_check(objects: list[dict[str, Any]]) -> str:
    """Runs the container's command with --check-config on the rendered creditgate.toml, with
    stand-ins for the URLs its environment takes from Secrets."""
    deployment = one(objects, "Deployment")
    container = creditgate_container(deployment["spec"]["template"]["spec"])
    args = list(container.get("args", []))
    assert args[:2] == ["serve", "--config"], f"args {args}"
    stand_ins = {"CREDITGATE_REDIS": "redis://127.0.0.1:6379",
                 "CREDITGATE_LEDGER": "postgres://creditgate@127.0.0.1:5432/creditgate"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDITGATE_")}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif var["name"] in stand_ins:
            env[var["name"]] = stand_ins[var["name"]]
    maps = [o for o in objects if o.get("kind") == "ConfigMap"
            and "creditgate.toml" in o.get("data", {})]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "creditgate.toml"
        path.write_text(maps[0]["data"]["creditgate.toml"])
        args[2] = str(path)
        done = subprocess.run([BINARY, *args, "--check-config"], env=env, capture_output=True,
                              text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr.strip()}"
    return done.stdout.strip()


# ---------------------------------------------------------------------------------------------
# Values that must be refused.

def render_fails(values: dict[str, Any], expect: str, error: type[helm.HelmError]) -> str:
    try:
        render(CHART, values)
    except error as e:
        message = str(e)
        assert expect in message, f"failed, but without {expect!r}: {message}"
        return message.strip().splitlines()[-1][:150]
    except helm.HelmError as e:
        raise AssertionError(f"failed with {type(e).__name__}, not {error.__name__}: {e}") from None
    raise AssertionError(f"rendered without an error: {values}")


def schema_refuses(values: dict[str, Any], expect: str) -> str:
    with helm.Chart.load(CHART) as chart:
        try:
            chart.validate_schema(values)
        except helm.HelmValuesError as e:
            assert expect in str(e), f"refused, but not for {expect!r}: {e}"
        else:
            raise AssertionError(f"values.schema.json accepts {values}")
    # Rendering (as helm install does) applies the schema too.
    return render_fails(values, expect, helm.HelmValuesError)


# ---------------------------------------------------------------------------------------------
# The schema against src/config/.

def schema_matches_binary() -> str:
    with helm.Chart.load(CHART) as chart:
        schema = chart.schema
    assert schema, "no values.schema.json"
    assert schema.get("$schema", "").startswith("http://json-schema.org/draft-07/"), "not draft-07"
    config = schema["properties"]["config"]
    price = config["properties"]["prices"]["items"]
    pairs = {
        "": (config, (KNOWN[""] - CHART_OWNED)),
        "limits": (config["properties"]["limits"], KNOWN["limits"]),
        "ext_authz": (config["properties"]["ext_authz"], KNOWN["ext_authz"]),
        "prices": (price, KNOWN["prices"]),
        "prices.per_unit": (price["properties"]["per_unit"], KNOWN["prices.per_unit"]),
        "prices.per_million_tokens.*": (price["properties"]["per_million_tokens"]
                                        ["additionalProperties"], KNOWN["prices.per_million_tokens.*"]),
        "webhooks": (config["properties"]["webhooks"]["items"], KNOWN["webhooks"]),
    }
    if "callers" in KNOWN:
        pairs["callers"] = (config["properties"]["callers"]["items"], KNOWN["callers"])
        operations = policy_operations()
        if operations:
            enum = set(config["properties"]["callers"]["items"]["properties"]["operations"]
                       ["items"]["enum"])
            assert enum == operations, f"callers operations: schema has {sorted(enum - operations)}" \
                                       f" extra, lacks {sorted(operations - enum)} (src/policy.rs)"
    for where, (node, fields) in pairs.items():
        assert node.get("additionalProperties") is False, f"config {where}: additionalProperties"
        have = set(node["properties"])
        assert have == fields, f"config [{where or 'top level'}]: schema has " \
                               f"{sorted(have - fields)} extra, lacks {sorted(fields - have)}"
    return f"{sum(len(f) for _, f in pairs.values())} keys"


# ---------------------------------------------------------------------------------------------
# The sidecar templates included from a parent chart.

PARENT_CHART = """\
apiVersion: v2
name: agent-platform
version: 1.0.0
appVersion: "7.7.7"
dependencies:
  - name: creditgate
    version: "{version}"
"""
PARENT_VALUES = """\
replicaCount: 1
creditgate:
  mode: library
  tls:
    enabled: true
    secretName: agent-creditgate-tls
  ledger:
    url: postgres://creditgate:secret@db:5432/creditgate
  config:
    prices:
      - feature: agent.minutes
        per_unit: {unit: minute, price: "0.05"}
"""
PARENT_TEMPLATES = {
    "creditgate.yaml": """\
{{ include "creditgate.sidecar.manifests" (dict "context" $ "values" .Values.creditgate "replicas" .Values.replicaCount) }}
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-agent
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      securityContext:
        fsGroup: 65532
      containers:
        - name: agent
          image: busybox:1.37
        {{- include "creditgate.sidecar.container" (dict "context" $ "values" .Values.creditgate "replicas" .Values.replicaCount) | nindent 8 }}
      volumes:
        {{- include "creditgate.sidecar.volumes" (dict "context" $ "values" .Values.creditgate) | nindent 8 }}
""",
}


def parent_chart_check() -> str:
    with tempfile.TemporaryDirectory(prefix="creditgate-parent-") as tmp:
        parent = Path(tmp) / "agent-platform"
        (parent / "templates").mkdir(parents=True)
        (parent / "charts").mkdir()
        shutil.copytree(CHART, parent / "charts" / "creditgate",
                        ignore=shutil.ignore_patterns("ci"))
        with helm.Chart.load(CHART) as chart:
            version = chart.version
        (parent / "Chart.yaml").write_text(PARENT_CHART.format(version=version))
        (parent / "values.yaml").write_text(PARENT_VALUES)
        for name, text in PARENT_TEMPLATES.items():
            (parent / "templates" / name).write_text(text)

        report = helm.lint(parent, None, strict=True, kube_version=f"v{KUBE_VERSION}")
        bad = [m for m in report["messages"] if m["severity"] >= 2]
        assert not bad, f"lint: {bad}"
        rendered = render(parent, None)
        # The subchart in library mode renders nothing of its own.
        own = [p for p, _ in manifests_of(rendered) if "/charts/creditgate/" in p]
        assert not own, f"library mode rendered {own}"
        objects = objects_of(rendered)
        for obj in objects:
            kubernetes_validate.validate(strip(obj), KUBE_VERSION, strict=True)
        deployment = one(objects, "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        container = creditgate_container(spec)
        assert container["image"].endswith(":" + version), \
            f"image {container['image']}: not the creditgate chart's appVersion"
        doc = rendered_toml(objects)
        check_toml_keys(doc)
        assert doc["listen"].startswith("127.0.0.1:"), f"listen {doc['listen']}"
        assert doc["admin_listen"].startswith("127.0.0.1:"), f"admin_listen {doc['admin_listen']}"
        for path in doc["tls"].values():
            mounted_file(spec, container, path, "secret")
        ref = {e["name"]: e for e in container["env"]}["CREDITGATE_LEDGER"]["valueFrom"]
        secret = one(objects, "Secret")
        assert ref["secretKeyRef"]["name"] == secret["metadata"]["name"], "ledger Secret"
        # The replicas the parent passes are checked like the chart's own.
        try:
            with helm.Chart.load(parent) as chart:
                chart.render({"replicaCount": 2}, name=RELEASE, namespace=NAMESPACE)
        except helm.HelmRenderError as e:
            assert "more than one replica needs both redis" in str(e), str(e)
        else:
            raise AssertionError("a parent with 2 replicas and no redis rendered")
    return "ConfigMap, Secret and sidecar container in agent-platform; 127.0.0.1; replicas checked"


# ---------------------------------------------------------------------------------------------

def main() -> int:
    print(f"check-chart: {CHART.relative_to(ROOT)} with helm-python-sdk {helm.__version__} "
          f"(Helm {helm.helm_sdk_version()}), kubernetes-validate "
          f"{kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}"
          f" against Kubernetes {KUBE_VERSION}", flush=True)

    def read_binary() -> str:
        KNOWN.update(binary_config())
        return f"{len(KNOWN[''])} top-level keys"

    if check("config keys from src/config/", read_binary) is None and not KNOWN:
        return finish()

    def metadata() -> str:
        with helm.Chart.load(CHART) as chart:
            meta = chart.metadata
        assert meta.get("apiVersion") == "v2", f"apiVersion {meta.get('apiVersion')}"
        assert meta.get("name") == "creditgate", f"name {meta.get('name')}"
        assert meta.get("appVersion") == "0.1.0", f"appVersion {meta.get('appVersion')}"
        return f"{meta['name']} {meta['version']}, appVersion {meta['appVersion']}"

    check("Chart.yaml", metadata)

    def sources() -> str:
        files = [CHART / "Chart.yaml", CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]
        problems = [f"{f.relative_to(CHART)}:{p.line}:{p.column} {p.desc} ({p.rule})"
                    for f in files for p in yamllint_linter.run(f.read_text(), YAMLLINT)]
        assert not problems, "; ".join(problems)
        return ", ".join(str(f.relative_to(CHART)) for f in files)

    check("yamllint of the chart's values files", sources)
    check("values.schema.json matches src/config/", schema_matches_binary)

    check_values_file("default values", None)
    for path in sorted((CHART / "ci").glob("*.yaml")):
        check_values_file(f"ci/{path.name}", path)
    check_values_file("inline redis and ledger URLs, 3 replicas", None, {
        "replicas": 3,
        "redis": {"url": "redis://:secret@redis-master:6379"},
        "ledger": {"url": "postgres://creditgate:secret@postgresql:5432/creditgate"},
        "extAuthz": {"enabled": True},
        "metrics": {"enabled": False},
        "config": {"commit_durability": "store", "limits": {"redis_partitions": 32}},
    })

    replicas_message = "more than one replica needs both redis"
    check("replicas 2 without redis or postgres: refused",
          lambda: render_fails({"replicas": 2}, replicas_message, helm.HelmRenderError))
    check("replicas 2 with postgres but no redis: refused",
          lambda: render_fails({"replicas": 2, "ledger": {"url": "postgres://db/cg"}},
                               replicas_message, helm.HelmRenderError))
    check("sidecar mode, replicas 2 without redis: refused",
          lambda: render_fails({"mode": "sidecar", "replicas": 2}, replicas_message,
                               helm.HelmRenderError))
    check("tls.enabled without a Secret: refused",
          lambda: render_fails({"tls": {"enabled": True}}, "tls.enabled needs tls.secretName",
                               helm.HelmRenderError))
    check("schema refuses ports.grpc: \"fifty\"",
          lambda: schema_refuses({"ports": {"grpc": "fifty"}}, "/ports/grpc"))
    check("schema refuses replicas: \"2\"",
          lambda: schema_refuses({"replicas": "2"}, "/replicas"))
    check("schema refuses mode: daemonset",
          lambda: schema_refuses({"mode": "daemonset"}, "/mode"))
    check("schema refuses an unknown top-level value",
          lambda: schema_refuses({"replicaCount": 2}, "replicaCount"))
    check("schema refuses an unknown [limits] key",
          lambda: schema_refuses({"config": {"limits": {"hold_ttl": 5}}}, "hold_ttl"))
    check("schema refuses config.listen (set by the chart)",
          lambda: schema_refuses({"config": {"listen": "0.0.0.0:1"}}, "listen"))
    check("schema refuses a price given as a number",
          lambda: schema_refuses({"config": {"prices": [{"feature": "f", "per_call": 0.04}]}},
                                 "/config/prices/0"))
    check("sidecar templates included from a parent chart", parent_chart_check)
    return finish()


def finish() -> int:
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"check-chart: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
