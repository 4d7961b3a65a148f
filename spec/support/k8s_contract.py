#!/usr/bin/python3
"""A Kubernetes API contract server for rollout's specs.

No cluster runs on these machines, so rollout's Kubernetes code is tested against this
server. It speaks the API's paths, verbs and content types for the objects the runbook
touches, keeps their state, checks every request as the API server would, and checks every
body for a core/apps/coordination/authorization object with the official Python client's
models (Debian's python3-kubernetes), so the shapes are not only ours.

Resources (namespaced unless noted; GET on a collection is a list, with labelSelector and
fieldSelector):
  /api/v1/namespaces/{ns}/pods[/{name}]            GET, DELETE          /api/v1/pods  (all namespaces)
  /api/v1/namespaces/{ns}/services[/{name}]        GET, POST, PATCH, DELETE
  /api/v1/namespaces/{ns}/configmaps[/{name}]      GET, POST, PATCH, DELETE
  /api/v1/nodes[/{name}]                           GET (cluster-scoped)
  /apis/apps/v1/namespaces/{ns}/deployments[/{name}]   GET, POST, PATCH, PUT, DELETE
  /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale   GET, PATCH   (autoscaling/v1 Scale)
  /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]   GET, POST, PATCH, PUT, DELETE
  /apis/authorization.k8s.io/v1/selfsubjectaccessreviews   POST (cluster-scoped)
  /apis/networking.istio.io/{v1beta1|v1alpha3|v1}/namespaces/{ns}/virtualservices[/{name}]
  /apis/networking.istio.io/.../destinationrules[/{name}]  GET, POST, PATCH, DELETE
  /version

What it enforces, as the API server would:
  - authentication: Authorization: Bearer <token> with the accepted tokens read from --tokens
    on every request (one per line, "token [user]"), so a test can rotate them; or a TLS
    client certificate signed by --client-ca (the user is its CN). Otherwise 401 Status.
  - authorization: with a permission set loaded (POST /_contract/rbac), every request is
    checked against it as RBAC would (verb, API group, resource[/subresource], namespace,
    resourceNames); a refusal is 403 Forbidden with the API's message. SelfSubjectAccessReview
    answers from the same set. Without one, everything is allowed.
  - methods per path (405), known paths (404), query parameters (400), Accept (406).
  - bodies: JSON objects (400). POST and PUT bodies, and every merge-patch result, of a
    core/apps/coordination/authorization object are deserialised with
    kubernetes.client.ApiClient().deserialize into the model of the kind (V1Deployment,
    V1Service, V1Scale, ...): whatever the client refuses (a required field missing, a wrong
    type) is refused with 422 Invalid carrying the client's message. Beyond the client:
    JSON types must match the model exactly (a string for an int is 400 BadRequest, as Go's
    decoder says), fields the model does not know are recorded as violations (the server's
    default fieldValidation=Warn answers with a Warning header), apiVersion/kind must match
    the path (400), metadata.name/namespace must match the path and be DNS names (400/422),
    a Deployment's selector must match its template's labels and is immutable, every
    container needs an image, replicas >= 0 (422).
  - content types: POST/PUT application/json; PATCH application/merge-patch+json (RFC 7386).
    application/json-patch+json, strategic-merge-patch+json and apply-patch+yaml are
    answered 415 by this contract (the API would take them; rollout does not send them).
  - resourceVersion: a PATCH or PUT carrying metadata.resourceVersion different from the
    current one is 409 Conflict; a POST of an existing name is 409 AlreadyExists; every
    change bumps resourceVersion, every spec change metadata.generation; dryRun=All changes
    nothing.
  - the VirtualService validated like Istio's webhook (422): hosts, HTTPRoute fields,
    destinations, weights 0..100 summing to 100, lower-case header names, one StringMatch.

Pods come and go as a Deployment's controller would make them (every --tick seconds, one
step): pods carry the template's labels plus pod-template-hash; a new pod is Pending and
becomes Running and Ready --ready-ticks ticks later; scale-down deletes pods (terminating
for two ticks, then gone); a new template rolls (maxSurge 25 %, maxUnavailable 25 %); a
deleted Deployment's pods are deleted. Deployment status (observedGeneration, replicas,
updatedReplicas, readyReplicas, availableReplicas, conditions) is computed from its pods.
A pod whose image is in the unpullable set waits with ErrImagePull/ImagePullBackOff and is
never ready; a deployment marked "stuck" gets pods that never become ready; "crash" makes
its pods restart (restartCount grows, CrashLoopBackOff). A Deployment that makes no
progress for spec.progressDeadlineSeconds gets Progressing=False ProgressDeadlineExceeded.

Control (no auth, for the specs): GET /_contract/log (every request), GET
/_contract/violations, GET /_contract/state (every object by resource), POST
/_contract/state (clear log, violations, objects and rbac; load {"virtualservices": [..],
"deployments": [..], "services", "configmaps", "nodes", "pods", "destinationrules"}),
POST /_contract/deployment {"namespace","name","stuck":bool,"crash":bool,"bump":true},
POST /_contract/images {"unpullable": [image, ...]}, POST /_contract/rbac {"roles":
[{"namespace": ns or null (cluster-wide), "rules": [RBAC PolicyRule, ...]}]} or null (allow
all), GET /healthz.

usage: k8s_contract.py --port P [--cert C --key K [--client-ca CA]] --tokens FILE [--tick 0.1]
       [--ready-ticks 3] [--state FILE]
"""
import argparse
import copy
import hashlib
import json
import math
import re
import ssl
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import kubernetes.client
from kubernetes.client import ApiClient

LOCK = threading.RLock()
KINDS = ("virtualservices", "destinationrules", "deployments", "pods", "services", "configmaps", "nodes", "leases")
STATE = {"rv": 1000, "objects": {k: {} for k in KINDS}, "unpullable": set(), "rbac": None}
LOG = []
VIOLATIONS = []
ARGS = None
API_CLIENT = ApiClient()

# resource -> (group, versions, namespaced, kind, model, verbs on a name, verbs on the collection)
RESOURCES = {
    "pods": ("", ("v1",), True, "Pod", "V1Pod", {"GET", "DELETE"}, {"GET"}),
    "services": ("", ("v1",), True, "Service", "V1Service", {"GET", "PATCH", "DELETE"}, {"GET", "POST"}),
    "configmaps": ("", ("v1",), True, "ConfigMap", "V1ConfigMap", {"GET", "PATCH", "DELETE"}, {"GET", "POST"}),
    "nodes": ("", ("v1",), False, "Node", "V1Node", {"GET"}, {"GET"}),
    "deployments": ("apps", ("v1",), True, "Deployment", "V1Deployment", {"GET", "PATCH", "PUT", "DELETE"}, {"GET", "POST"}),
    "leases": ("coordination.k8s.io", ("v1",), True, "Lease", "V1Lease", {"GET", "PATCH", "PUT", "DELETE"}, {"GET", "POST"}),
    "virtualservices": ("networking.istio.io", ("v1beta1", "v1alpha3", "v1"), True, "VirtualService", None,
                        {"GET", "PATCH", "DELETE"}, {"GET", "POST"}),
    "destinationrules": ("networking.istio.io", ("v1beta1", "v1alpha3", "v1"), True, "DestinationRule", None,
                         {"GET", "PATCH", "DELETE"}, {"GET", "POST"}),
}
PATH_RE = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[a-z0-9.-]+)/(?P<v>v[0-9a-z]+))"
                     r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$")
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUERY_OK = {"dryRun", "fieldManager", "fieldValidation", "labelSelector", "fieldSelector", "propagationPolicy",
            "gracePeriodSeconds", "limit", "resourceVersion", "timeoutSeconds"}

HTTP_ROUTE_FIELDS = {"name", "match", "route", "redirect", "delegate", "rewrite", "timeout", "retries",
                     "fault", "mirror", "mirrors", "mirrorPercentage", "mirror_percent", "mirrorPercent",
                     "corsPolicy", "headers", "directResponse"}
MATCH_FIELDS = {"name", "uri", "scheme", "method", "authority", "headers", "port", "sourceLabels",
                "gateways", "queryParams", "ignoreUriCase", "withoutHeaders", "sourceNamespace", "statPrefix"}
DEST_FIELDS = {"destination", "weight", "headers"}
DESTINATION_FIELDS = {"host", "subset", "port"}
STRING_MATCH = {"exact", "prefix", "regex"}


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_body(code, reason, message, details=None):
    b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        b["details"] = details
    return b


def now_str():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def next_rv():
    STATE["rv"] += 1
    return str(STATE["rv"])


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def public(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


# ---- model validation with the official client ---------------------------------------

class _Resp:
    def __init__(self, data):
        self.data = json.dumps(data)


def model_class(name):
    return getattr(kubernetes.client.models, name, None) or getattr(kubernetes.client, name)


def walk(value, typ, path, problems, unknown):
    """Check JSON types against the client's openapi_types exactly; collect unknown fields."""
    if value is None:
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            walk(v, typ[5:-1], f"{path}[{i}]", problems, unknown)
        return
    if typ.startswith("dict("):
        inner = typ[5:-1].split(", ", 1)[1]
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for k, v in value.items():
            walk(v, inner, f"{path}.{k}", problems, unknown)
        return
    simple = {"str": str, "bool": bool, "float": (int, float), "datetime": str, "date": str}
    if typ == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: cannot unmarshal {type(value).__name__} into an integer field")
        return
    if typ in simple:
        if not isinstance(value, simple[typ]) or (typ == "float" and isinstance(value, bool)):
            problems.append(f"{path}: cannot unmarshal {type(value).__name__} into a {typ} field")
        return
    if typ == "object":
        return
    cls = model_class(typ)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected an object ({typ}), got {type(value).__name__}")
        return
    by_json = {j: a for a, j in cls.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            unknown.append(f"{path}.{k}" if path else k)
            continue
        walk(v, cls.openapi_types[by_json[k]], f"{path}.{k}" if path else k, problems, unknown)


def validate_model(obj, model, handler=None):
    """Refuse what the official client refuses (422) and wrong JSON types (400); record
    unknown fields as violations with a Warning header (fieldValidation=Warn)."""
    problems, unknown = [], []
    walk(obj, model, "", problems, unknown)
    if problems:
        raise ApiError(400, "BadRequest", "strict decoding error: " + "; ".join(problems[:5]))
    try:
        API_CLIENT.deserialize(_Resp(obj), model)
    except (ValueError, TypeError) as e:
        raise ApiError(422, "Invalid", f"{model} rejected by the Kubernetes Python client: {e}")
    if unknown:
        msg = "unknown field(s): " + ", ".join(f'"{u}"' for u in unknown[:10])
        VIOLATIONS.append({"why": msg, "model": model})
        if handler is not None:
            handler.warnings.append(msg)


def invalid(kind, name, msg):
    raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {msg}')


def check_name(kind, name, field="metadata.name"):
    if not isinstance(name, str) or not name or len(name) > 253 or not DNS_NAME.match(name):
        invalid(kind, name, f"{field}: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of "
                            "lower case alphanumeric characters, '-' or '.'")


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def semantic_validate(res, obj, old=None):
    """The API server's own validation beyond the model's shape."""
    kind = RESOURCES[res][3]
    name = obj["metadata"].get("name")
    check_name(kind, name)
    for k, v in (obj["metadata"].get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or (v and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", v)):
            invalid(kind, name, f"metadata.labels: Invalid value: {v!r}")
    if res == "deployments":
        spec = obj.get("spec") or {}
        if spec.get("replicas", 1) < 0:
            invalid(kind, name, "spec.replicas: Invalid value: must be greater than or equal to 0")
        if old is not None and (old["spec"].get("selector") != spec.get("selector")):
            invalid(kind, name, "spec.selector: Invalid value: field is immutable")
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        if not sel:
            invalid(kind, name, "spec.selector: Required value")
        tl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not labels_match(sel, tl):
            invalid(kind, name, "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`")
        cts = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        if not cts:
            invalid(kind, name, "spec.template.spec.containers: Required value")
        for i, c in enumerate(cts):
            if not c.get("image"):
                invalid(kind, name, f"spec.template.spec.containers[{i}].image: Required value")
    if res == "services":
        for k, v in ((obj.get("spec") or {}).get("selector") or {}).items():
            if not isinstance(v, str):
                invalid(kind, name, f"spec.selector.{k}: must be a string")


# ---- the VirtualService (Istio's webhook) --------------------------------------------

def vs_invalid(msg):
    raise ApiError(422, "Invalid", "admission webhook \"validation.istio.io\" denied the request: " + msg)


def validate_string_match(where, m):
    if not isinstance(m, dict) or len(m) != 1 or next(iter(m)) not in STRING_MATCH:
        vs_invalid(f"{where}: a StringMatch needs exactly one of exact, prefix, regex")
    if not isinstance(next(iter(m.values())), str):
        vs_invalid(f"{where}: StringMatch value must be a string")


def validate_vs(vs):
    spec = vs.get("spec")
    if not isinstance(spec, dict):
        vs_invalid("spec: required object")
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        vs_invalid("spec.hosts: a non-empty list of strings")
    routes = spec.get("http", [])
    if not isinstance(routes, list):
        vs_invalid("spec.http: must be a list")
    for i, r in enumerate(routes):
        where = f"spec.http[{i}]"
        if not isinstance(r, dict):
            vs_invalid(f"{where}: must be an object")
        extra = set(r) - HTTP_ROUTE_FIELDS
        if extra:
            vs_invalid(f"{where}: unknown field(s) {sorted(extra)}")
        if "route" not in r and "redirect" not in r and "delegate" not in r and "directResponse" not in r:
            vs_invalid(f"{where}: needs route, redirect, delegate or directResponse")
        for j, m in enumerate(r.get("match", []) or []):
            if not isinstance(m, dict) or set(m) - MATCH_FIELDS:
                vs_invalid(f"{where}.match[{j}]: not an HTTPMatchRequest")
            for name, sm in (m.get("headers") or {}).items():
                if name != name.lower():
                    vs_invalid(f"{where}.match[{j}].headers: header name {name!r} must be lower-case")
                validate_string_match(f"{where}.match[{j}].headers.{name}", sm)
        dests = r.get("route")
        if dests is None:
            continue
        if not isinstance(dests, list) or not dests:
            vs_invalid(f"{where}.route: a non-empty list")
        total = 0
        for j, d in enumerate(dests):
            dw = f"{where}.route[{j}]"
            if not isinstance(d, dict) or set(d) - DEST_FIELDS:
                vs_invalid(f"{dw}: not an HTTPRouteDestination (fields {sorted(DEST_FIELDS)})")
            dst = d.get("destination")
            if not isinstance(dst, dict) or set(dst) - DESTINATION_FIELDS or not isinstance(dst.get("host"), str) or not dst["host"]:
                vs_invalid(f"{dw}.destination: needs host (and optionally subset, port)")
            if "port" in dst and not (isinstance(dst["port"], dict) and isinstance(dst["port"].get("number"), int)):
                vs_invalid(f"{dw}.destination.port: expected {{number: N}}")
            w = d.get("weight", 0 if len(dests) > 1 else 100)
            if not isinstance(w, int) or isinstance(w, bool) or w < 0 or w > 100:
                vs_invalid(f"{dw}.weight: an integer 0..100, got {w!r}")
            total += w
        if len(dests) > 1 and total != 100:
            vs_invalid(f"{where}.route: total destination weight {total} != 100")


def validate_dr(dr):
    spec = dr.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("host"), str) or not spec["host"]:
        vs_invalid("spec.host: required")
    for i, s in enumerate(spec.get("subsets") or []):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("labels", {}), dict):
            vs_invalid(f"spec.subsets[{i}]: needs name and labels")


def validate_object(res, obj, old=None, handler=None):
    model = RESOURCES[res][4]
    if model:
        validate_model(obj, model, handler)
        semantic_validate(res, obj, old)
    elif res == "virtualservices":
        validate_vs(obj)
    elif res == "destinationrules":
        validate_dr(obj)


# ---- label and field selectors -------------------------------------------------------

def parse_selector(s):
    reqs = []
    for part in [p.strip() for p in re.split(r",(?![^(]*\))", s or "") if p.strip()]:
        m = re.match(r"^([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)$", part)
        if m:
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", m.group(3)))
            continue
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", part)
        if m:
            reqs.append((m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}))
            continue
        m = re.match(r"^(!?)([\w./-]+)$", part)
        if m:
            reqs.append((m.group(2), "!" if m.group(1) else "exists", None))
            continue
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return reqs


def selector_matches(reqs, labels):
    for k, op, v in reqs:
        have = labels.get(k)
        if op == "=" and have != v:
            return False
        if op == "!=" and have == v:
            return False
        if op == "in" and have not in v:
            return False
        if op == "notin" and have in v:
            return False
        if op == "exists" and have is None:
            return False
        if op == "!" and have is not None:
            return False
    return True


FIELDS = {"metadata.name": lambda o: o["metadata"].get("name"),
          "metadata.namespace": lambda o: o["metadata"].get("namespace"),
          "spec.nodeName": lambda o: (o.get("spec") or {}).get("nodeName"),
          "status.phase": lambda o: (o.get("status") or {}).get("phase")}


def field_matches(s, obj):
    for part in [p for p in (s or "").split(",") if p]:
        m = re.match(r"^([\w.]+)(==|=|!=)(.*)$", part)
        if not m or m.group(1) not in FIELDS:
            raise ApiError(400, "BadRequest", f"field label not supported: {part}")
        have = FIELDS[m.group(1)](obj) or ""
        if (m.group(2) == "!=") == (have == m.group(3)):
            return False
    return True


# ---- RBAC ----------------------------------------------------------------------------

def rule_allows(rule, verb, group, resource, name):
    def has(lst, v):
        return "*" in (lst or []) or v in (lst or [])
    if not has(rule.get("verbs"), verb) or not has(rule.get("apiGroups"), group) or not has(rule.get("resources"), resource):
        return False
    names = rule.get("resourceNames")
    return not names or name in names


def allowed(verb, group, resource, ns, name):
    """resource is "deployments" or "deployments/scale"."""
    rbac = STATE["rbac"]
    if rbac is None:
        return True
    if group == "authorization.k8s.io" and resource in ("selfsubjectaccessreviews", "selfsubjectrulesreviews"):
        return True
    for role in rbac.get("roles", []):
        scope = role.get("namespace")
        if scope is not None and scope != ns:
            continue
        for rule in role.get("rules", []):
            if rule_allows(rule, verb, group, resource, name):
                return True
    return False


def forbid(user, verb, group, resource, ns, name):
    res, _, sub = resource.partition("/")
    where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    target = f'{res}{("." + group) if group else ""} "{name}"' if name else f'{res}{("." + group) if group else ""}'
    raise ApiError(403, "Forbidden", f'{target} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                                     f'in API group "{group}"{where}',
                   {"name": name, "group": group, "kind": res})


# ---- objects ---------------------------------------------------------------------------

def objects(res):
    return STATE["objects"][res]


def get_obj(res, ns, name):
    o = objects(res).get((ns, name))
    if o is None or o.get("_gone"):
        g = RESOURCES[res][0]
        raise ApiError(404, "NotFound", f'{res}{("." + g) if g else ""} "{name}" not found',
                       {"name": name, "group": g, "kind": res})
    return o


def init_meta(res, obj, ns):
    m = obj.setdefault("metadata", {})
    if ns is not None:
        m["namespace"] = ns
    m.setdefault("uid", str(uuid.uuid4()))
    m.setdefault("creationTimestamp", now_str())
    m["generation"] = m.get("generation", 1)
    m["resourceVersion"] = next_rv()
    g, versions, _, kind, _, _, _ = RESOURCES[res]
    obj.setdefault("apiVersion", (g + "/" if g else "") + versions[0])
    obj.setdefault("kind", kind)
    return obj


def scale_of(d):
    m = d["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "resourceVersion": m["resourceVersion"],
                         "uid": m["uid"], "creationTimestamp": m["creationTimestamp"]},
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {"replicas": d["status"].get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(d["spec"]["selector"]["matchLabels"].items()))}}


def check_content_type(handler, method):
    ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
    if method == "PATCH":
        if ctype == "application/merge-patch+json":
            return
        if ctype in ("application/json-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"):
            raise ApiError(415, "UnsupportedMediaType", f"the contract covers merge patches only, got {ctype}")
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types include: "
                       f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ctype!r})")
    if ctype != "application/json":
        raise ApiError(415, "UnsupportedMediaType", f"{method} needs Content-Type application/json, got {ctype!r}")


def check_rv(body, obj):
    rv = (body.get("metadata") or {}).get("resourceVersion")
    if rv is not None and rv != obj["metadata"]["resourceVersion"]:
        raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {obj["kind"].lower()}s "{obj["metadata"]["name"]}": '
                                        "the object has been modified; please apply your changes to the latest version and try again")


def commit(res, ns, name, old, new):
    if new.get("spec") != old.get("spec"):
        new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
    new["metadata"]["resourceVersion"] = next_rv()
    for k, v in old.items():
        if k.startswith("_"):
            new[k] = v
    objects(res)[(ns, name)] = new
    return new


def handle(handler, method, query, body, m):
    g = m.group("g") or ""
    version = m.group("cv") or m.group("v")
    ns, res, name, sub = m.group("ns"), m.group("res"), m.group("name"), m.group("sub")
    dry = query.get("dryRun") == ["All"]
    if g == "authorization.k8s.io" and res in ("selfsubjectaccessreviews",) and version == "v1" and not ns and not name:
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on selfsubjectaccessreviews")
        check_content_type(handler, method)
        return 201, ssar(handler, body)
    spec = RESOURCES.get(res)
    if spec is None or spec[0] != g or version not in spec[1]:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    namespaced = spec[2]
    if namespaced and ns is None and name is not None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if not namespaced and ns is not None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if sub and not (res == "deployments" and sub == "scale"):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    verbs = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
             "DELETE": "delete" if name else "deletecollection"}
    verb = verbs.get(method, method.lower())
    rbac_res = res + ("/" + sub if sub else "")
    if not allowed(verb, g, rbac_res, ns, name):
        forbid(handler.user, verb, g, rbac_res, ns, name)
    allowed_methods = spec[5] if name else spec[6]
    if sub == "scale":
        allowed_methods = {"GET", "PATCH"}
    if method not in allowed_methods:
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {rbac_res}")
    with LOCK:
        if name is None and method == "GET":
            lsel = parse_selector((query.get("labelSelector") or [""])[0])
            fsel = (query.get("fieldSelector") or [""])[0]
            items = [public(o) for (ons, _), o in sorted(objects(res).items())
                     if (ns is None or ons == ns) and not o.get("_gone")
                     and selector_matches(lsel, o["metadata"].get("labels") or {}) and field_matches(fsel, o)]
            kind = spec[3]
            return 200, {"kind": kind + "List", "apiVersion": (g + "/" if g else "") + version,
                         "metadata": {"resourceVersion": str(STATE["rv"])}, "items": items}
        if method == "POST":
            check_content_type(handler, method)
            obj = copy.deepcopy(body)
            meta = obj.get("metadata") or {}
            if obj.get("kind") != spec[3] or obj.get("apiVersion") != (g + "/" if g else "") + version:
                raise ApiError(400, "BadRequest", f"the API version/kind in the body ({obj.get('apiVersion')}/{obj.get('kind')}) "
                                                  f"does not match the endpoint's ({(g + '/' if g else '') + version}/{spec[3]})")
            if meta.get("namespace") not in (None, ns):
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
            if meta.get("resourceVersion"):
                invalid(spec[3], meta.get("name"), "metadata.resourceVersion: Invalid value: must be empty on create")
            validate_object(res, obj, None, handler)
            cname = meta["name"]
            if (ns, cname) in objects(res) and not objects(res)[(ns, cname)].get("_gone"):
                raise ApiError(409, "AlreadyExists", f'{res}{("." + g) if g else ""} "{cname}" already exists')
            if dry:
                return 201, init_meta(res, obj, ns)
            obj = init_meta(res, obj, ns)
            if res == "deployments":
                obj["status"] = {}
            objects(res)[(ns, cname)] = obj
            return 201, obj
        obj = get_obj(res, ns, name)
        if sub == "scale":
            if method == "GET":
                return 200, scale_of(obj)
            check_content_type(handler, method)
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the patch must be a JSON object")
            check_rv(body, obj)
            new_scale = merge_patch(scale_of(obj), body)
            validate_model(new_scale, "V1Scale", handler)
            if set(body) - {"spec", "metadata"} or set(body.get("spec") or {}) - {"replicas"}:
                raise ApiError(422, "Invalid", "a Scale patch may set spec.replicas only")
            n = new_scale["spec"].get("replicas")
            if n is None or n < 0:
                raise ApiError(422, "Invalid", f"Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {n!r}: "
                                               "must be greater than or equal to 0")
            if dry:
                return 200, new_scale
            if n != obj["spec"]["replicas"]:
                new = copy.deepcopy(obj)
                new["spec"]["replicas"] = n
                obj = commit(res, ns, name, obj, new)
                obj["_progress_at"] = time.monotonic()
            return 200, scale_of(obj)
        if method == "GET":
            return 200, obj
        if method == "DELETE":
            if dry:
                return 200, status_ok(res, name)
            del objects(res)[(ns, name)]
            if res == "pods":
                obj["_gone"] = True
            if res == "deployments":
                for p in owned_pods(obj):
                    terminate(p)
            return 200, status_ok(res, name)
        check_content_type(handler, method)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        check_rv(body, obj)
        if method == "PUT":
            if not (body.get("metadata") or {}).get("resourceVersion"):
                invalid(spec[3], name, "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
            new = copy.deepcopy(body)
            new.setdefault("status", copy.deepcopy(obj.get("status")))
        else:
            new = merge_patch(public(obj), body)
        for k in ("apiVersion", "kind"):
            if new.get(k) != obj.get(k):
                raise ApiError(400, "BadRequest", f"{k} may not be changed")
        if new["metadata"].get("name") != name or new["metadata"].get("namespace") != ns:
            raise ApiError(400, "BadRequest", "metadata.name and metadata.namespace may not be changed")
        for k in ("uid", "creationTimestamp"):
            new["metadata"][k] = obj["metadata"][k]
        validate_object(res, new, obj, handler)
        if dry:
            return 200, new
        out = commit(res, ns, name, obj, new)
        if res == "deployments" and out["spec"] != obj["spec"]:
            out["_progress_at"] = time.monotonic()
        return 200, out


def status_ok(res, name):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": res}}


def ssar(handler, body):
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    if body.get("kind") != "SelfSubjectAccessReview" or body.get("apiVersion") != "authorization.k8s.io/v1":
        raise ApiError(400, "BadRequest", "expected authorization.k8s.io/v1 SelfSubjectAccessReview")
    validate_model(body, "V1SelfSubjectAccessReview", handler)
    ra = (body.get("spec") or {}).get("resourceAttributes")
    if not ra:
        raise ApiError(422, "Invalid", "spec.resourceAttributes: Required value (nonResourceAttributes are not in the contract)")
    res = ra.get("resource", "") + ("/" + ra["subresource"] if ra.get("subresource") else "")
    ok = allowed(ra.get("verb"), ra.get("group", ""), res, ra.get("namespace") or None, ra.get("name"))
    out = copy.deepcopy(body)
    out.setdefault("metadata", {})["creationTimestamp"] = None
    out["status"] = {"allowed": ok}
    if ok:
        out["status"]["reason"] = "allowed by the contract's permission set" if STATE["rbac"] else "no permission set: all allowed"
    return out


# ---- the Deployment controller ---------------------------------------------------------

def template_hash(d):
    return hashlib.sha256(json.dumps(d["spec"]["template"], sort_keys=True).encode()).hexdigest()[:10]


def owned_pods(d):
    key = (d["metadata"]["namespace"], d["metadata"]["name"])
    return [p for p in objects("pods").values() if p.get("_owner") == key]


def terminate(p):
    if not p["metadata"].get("deletionTimestamp"):
        p["metadata"]["deletionTimestamp"] = now_str()
        p["metadata"]["deletionGracePeriodSeconds"] = 30
        p["_term_ticks"] = 2
        p["metadata"]["resourceVersion"] = next_rv()


NODE_RR = [0]


def pick_node():
    nodes = sorted(n["metadata"]["name"] for n in objects("nodes").values())
    if not nodes:
        return None
    NODE_RR[0] += 1
    return nodes[NODE_RR[0] % len(nodes)]


def new_pod(d, h, ready=False):
    ns, dname = d["metadata"]["namespace"], d["metadata"]["name"]
    tpl = copy.deepcopy(d["spec"]["template"])
    labels = dict((tpl.get("metadata") or {}).get("labels") or {})
    labels["pod-template-hash"] = h
    name = f"{dname}-{h[:8]}-{uuid.uuid4().hex[:5]}"
    spec = tpl["spec"]
    node = pick_node()
    if node:
        spec["nodeName"] = node
    p = {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": str(uuid.uuid4()),
                      "creationTimestamp": now_str(), "resourceVersion": next_rv(),
                      "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{dname}-{h[:8]}",
                                           "uid": d["metadata"]["uid"], "controller": True}]},
         "spec": spec, "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]},
         "_owner": (ns, dname), "_hash": h, "_age": ARGS.ready_ticks if ready else 0}
    pod_status(p, d)
    objects("pods")[(ns, name)] = p
    return p


def pod_status(p, d):
    """Advance one pod by one tick."""
    cts = p["spec"]["containers"]
    stuck, crash = bool(d and d.get("_stuck")), bool(d and d.get("_crash"))
    bad = [c["image"] for c in cts if c.get("image") in STATE["unpullable"]]
    old = json.dumps(p["status"], sort_keys=True)
    p["_age"] = p.get("_age", 0) + 1
    statuses = []
    ready = False
    if bad:
        reason = "ErrImagePull" if p["_age"] < 3 else "ImagePullBackOff"
        for c in cts:
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                             "started": False, "state": {"waiting": {"reason": reason, "message":
                             f'Back-off pulling image "{c["image"]}"' if reason == "ImagePullBackOff" else
                             f'rpc error: code = NotFound desc = failed to pull and unpack image "{c["image"]}": not found'}}})
        phase = "Pending"
    elif stuck or p["_age"] < ARGS.ready_ticks:
        phase = "Pending"
        for c in cts:
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "", "ready": False, "restartCount": 0,
                             "started": False, "state": {"waiting": {"reason": "ContainerCreating"}}})
    elif crash:
        phase = "Running"
        p["_restarts"] = p.get("_restarts", 0) + 1
        for c in cts:
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "sha256:" + hashlib.sha256(c["image"].encode()).hexdigest(),
                             "ready": False, "restartCount": p["_restarts"], "started": False,
                             "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}})
    else:
        phase, ready = "Running", True
        for c in cts:
            statuses.append({"name": c["name"], "image": c["image"], "imageID": "sha256:" + hashlib.sha256(c["image"].encode()).hexdigest(),
                             "ready": True, "restartCount": p.get("_restarts", 0), "started": True,
                             "state": {"running": {"startedAt": p["metadata"]["creationTimestamp"]}}})
    p["status"] = {"phase": phase, "containerStatuses": statuses, "hostIP": "10.0.0.1", "podIP": "10.1.0.1",
                   "conditions": [{"type": "PodScheduled", "status": "True"},
                                  {"type": "Ready", "status": "True" if ready else "False"}]}
    if json.dumps(p["status"], sort_keys=True) != old:
        p["metadata"]["resourceVersion"] = next_rv()


def pod_ready(p):
    return not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))


def reconcile(d, now):
    st, spec, meta = d.setdefault("status", {}), d["spec"], d["metadata"]
    before = json.dumps(st, sort_keys=True)
    h = template_hash(d)
    want = spec.get("replicas", 1)
    if st.get("observedGeneration", 0) < meta["generation"]:
        # observed in the same sync that recomputes the status, as the controller does
        st["observedGeneration"] = meta["generation"]
        set_condition(d, "Progressing", "True", "ReplicaSetUpdated")
        d["_progress_at"] = now
    live = [p for p in owned_pods(d) if not p["metadata"].get("deletionTimestamp")]
    new = [p for p in live if p["_hash"] == h]
    old = [p for p in live if p["_hash"] != h]
    surge = max(1, math.ceil(want * 0.25)) if want else 0
    unavail = math.floor(want * 0.25)
    ready_new = [p for p in new if pod_ready(p)]
    if len(new) > want:
        for p in sorted(new, key=pod_ready)[:len(new) - want]:
            terminate(p)
        d["_progress_at"] = now
    elif len(new) < want and len(live) < want + surge:
        new_pod(d, h)
        d["_progress_at"] = now
    if old and len(ready_new) + len([p for p in old if pod_ready(p)]) - 1 >= want - unavail:
        terminate(old[0])
        d["_progress_at"] = now
    elif old and want == 0:
        for p in old:
            terminate(p)
    live = [p for p in owned_pods(d) if not p["metadata"].get("deletionTimestamp")]
    upd = [p for p in live if p["_hash"] == h]
    ready = [p for p in live if pod_ready(p)]
    prev_ready = st.get("readyReplicas", 0)
    st.update({"replicas": len(live), "updatedReplicas": len(upd), "readyReplicas": len(ready),
               "availableReplicas": len(ready)})
    if len(ready) != prev_ready:
        d["_progress_at"] = now
    unavailable = max(0, want - len(ready))
    if unavailable:
        st["unavailableReplicas"] = unavailable
    else:
        st.pop("unavailableReplicas", None)
    complete = len(upd) == want and len(live) == want and len([p for p in upd if pod_ready(p)]) == want
    if complete:
        if cond_reason(d) != "NewReplicaSetAvailable":
            set_condition(d, "Progressing", "True", "NewReplicaSetAvailable")
    elif now - d.get("_progress_at", now) > spec.get("progressDeadlineSeconds", 600) \
            and cond_reason(d) != "ProgressDeadlineExceeded":
        set_condition(d, "Progressing", "False", "ProgressDeadlineExceeded")
    set_condition(d, "Available", "True" if want - len(ready) <= unavail else "False",
                  "MinimumReplicasAvailable" if want - len(ready) <= unavail else "MinimumReplicasUnavailable", keep=True)
    if json.dumps(st, sort_keys=True) != before:
        meta["resourceVersion"] = next_rv()


def tick():
    now = time.monotonic()
    with LOCK:
        pods = objects("pods")
        for key, p in list(pods.items()):
            if p["metadata"].get("deletionTimestamp"):
                p["_term_ticks"] -= 1
                if p["_term_ticks"] <= 0:
                    del pods[key]
            else:
                owner = objects("deployments").get(p.get("_owner")) if p.get("_owner") else None
                if p.get("_owner") or p.get("_managed"):
                    pod_status(p, owner)
        for d in list(objects("deployments").values()):
            reconcile(d, now)


def cond_reason(d):
    for c in d["status"].get("conditions", []):
        if c["type"] == "Progressing":
            return c.get("reason")
    return None


def set_condition(d, ctype, status, reason, keep=False):
    conds = d["status"].get("conditions", [])
    for c in conds:
        if c["type"] == ctype and keep and c["status"] == status and c["reason"] == reason:
            return
    conds = [c for c in conds if c["type"] != ctype]
    conds.append({"type": ctype, "status": status, "reason": reason,
                  "message": f"{reason} (contract server)", "lastUpdateTime": now_str(),
                  "lastTransitionTime": now_str()})
    d["status"]["conditions"] = conds


# ---- state and control -----------------------------------------------------------------

def load_state(data):
    with LOCK:
        LOG.clear()
        VIOLATIONS.clear()
        for k in KINDS:
            objects(k).clear()
        STATE["unpullable"] = set()
        STATE["rbac"] = None
        for res in KINDS:
            for o in data.get(res, []) or []:
                o = copy.deepcopy(o)
                ns = (o.get("metadata") or {}).get("namespace") if RESOURCES[res][2] else None
                o = init_meta(res, o, ns)
                validate_object(res, o)
                objects(res)[(ns, o["metadata"]["name"])] = o
                if res == "pods":
                    o["_managed"] = bool(o.get("status") is None)
                    o.setdefault("status", {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
        for d in objects("deployments").values():
            n = d["spec"]["replicas"]
            h = template_hash(d)
            for _ in range(n):
                new_pod(d, h, ready=True)
            ready = len(owned_pods(d))
            d["status"] = {"observedGeneration": d["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                           "readyReplicas": ready, "availableReplicas": ready}
            set_condition(d, "Progressing", "True", "NewReplicaSetAvailable")
            set_condition(d, "Available", "True", "MinimumReplicasAvailable")
        if VIOLATIONS:
            raise ApiError(400, "BadRequest", "state: " + json.dumps(VIOLATIONS))


def control(handler, method, path, body):
    if path == "/_contract/log":
        return 200, LOG
    if path == "/_contract/violations":
        return 200, VIOLATIONS
    if path == "/_contract/state" and method == "POST":
        load_state(body)
        return 200, {"ok": True}
    if path == "/_contract/state" and method == "GET":
        with LOCK:
            return 200, {k: [public(o) for o in objects(k).values()] for k in KINDS}
    if path == "/_contract/deployment" and method == "POST":
        with LOCK:
            d = get_obj("deployments", body["namespace"], body["name"])
            for flag in ("stuck", "crash"):
                if flag in body:
                    d["_" + flag] = bool(body[flag])
                    d["_progress_at"] = time.monotonic()
            if body.get("bump"):
                tpl = d["spec"]["template"].setdefault("metadata", {})
                tpl.setdefault("annotations", {})["kubectl.kubernetes.io/restartedAt"] = f"{time.time():.6f}"
                d["metadata"]["generation"] += 1
                d["metadata"]["resourceVersion"] = next_rv()
                d["_progress_at"] = time.monotonic()
            return 200, public(d)
    if path == "/_contract/images" and method == "POST":
        with LOCK:
            STATE["unpullable"] = set(body.get("unpullable") or [])
            return 200, {"ok": True}
    if path == "/_contract/rbac" and method == "POST":
        with LOCK:
            STATE["rbac"] = body
            return 200, {"ok": True}
    if path == "/healthz":
        return 200, {"ok": True}
    raise ApiError(404, "NotFound", "no such control path " + path)


def accepted_tokens():
    out = {}
    try:
        with open(ARGS.tokens) as f:
            for line in f:
                parts = line.split()
                if parts:
                    out[parts[0]] = parts[1] if len(parts) > 1 else "system:serviceaccount:production:rollout"
    except OSError:
        pass
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for w in getattr(self, "warnings", []):
            self.send_header("Warning", '299 - "' + w.replace('"', "'") + '"')
        self.end_headers()
        self.wfile.write(data)

    def authenticate(self):
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            user = accepted_tokens().get(auth[7:])
            if user:
                return user
            raise ApiError(401, "Unauthorized", "Unauthorized")
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            cert = None
        if cert:
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        return v
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def handle_any(self):
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        self.warnings = []
        entry = {"method": self.command, "path": path, "query": url.query,
                 "content_type": self.headers.get("Content-Type"), "accept": self.headers.get("Accept"),
                 "authorization": self.headers.get("Authorization"), "t": time.time()}
        body = None
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"invalid JSON body: {e}")
            entry["body"] = body
            if path.startswith("/_contract/") or path == "/healthz":
                code, obj = control(self, self.command, path, body)
                self.send_json(code, obj)
                return
            self.user = self.authenticate()
            entry["user"] = self.user
            for k in query:
                if k not in QUERY_OK:
                    raise ApiError(400, "BadRequest", f"unknown query parameter {k!r}")
            if "dryRun" in query and query["dryRun"] != ["All"]:
                raise ApiError(400, "BadRequest", "dryRun must be All")
            accept = self.headers.get("Accept")
            if accept and "json" not in accept and "*/*" not in accept:
                raise ApiError(406, "NotAcceptable", f"cannot produce {accept}")
            if self.command in ("PATCH", "PUT", "POST") and not raw:
                raise ApiError(400, "BadRequest", "empty body")
            if self.command in ("GET", "DELETE") and raw:
                VIOLATIONS.append({"request": entry, "why": self.command + " with a body"})
            if path == "/version":
                code, obj = 200, {"major": "1", "minor": "28", "gitVersion": "v1.28.0-contract"}
            else:
                m = PATH_RE.match(path)
                if not m:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                code, obj = handle(self, self.command, query, body, m)
            entry["status"] = code
            if self.warnings:
                entry["warnings"] = self.warnings
            self.send_json(code, public(obj))
        except ApiError as e:
            entry["status"] = e.code
            entry["error"] = e.message
            if e.code in (400, 405, 406, 415, 422):
                VIOLATIONS.append({"request": entry, "why": e.message})
            self.send_json(e.code, status_body(e.code, e.reason, e.message, e.details))
        finally:
            with LOCK:
                LOG.append(entry)

    do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = handle_any


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--client-ca")
    p.add_argument("--tokens", required=True)
    p.add_argument("--state")
    p.add_argument("--tick", type=float, default=0.1)
    p.add_argument("--ready-ticks", type=int, default=3)
    ARGS = p.parse_args()
    if ARGS.state:
        with open(ARGS.state) as f:
            load_state(json.load(f))
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        if ARGS.client_ca:
            ctx.load_verify_locations(ARGS.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)

    def ticker():
        while True:
            time.sleep(ARGS.tick)
            try:
                tick()
            except Exception as e:  # keep the controller alive; the specs see it in violations
                VIOLATIONS.append({"why": "controller: " + repr(e)})
    threading.Thread(target=ticker, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
