#!/usr/bin/python3
"""A Kubernetes API contract server for the Istio router's specs.

No cluster runs on these machines, so the router is tested against this server instead. It
speaks the documented shapes of the few calls the router makes, checks every request against
them, and keeps state:

  GET   /apis/networking.istio.io/{v1beta1|v1alpha3|v1}/namespaces/{ns}/virtualservices/{name}
  PATCH  the same                    Content-Type application/merge-patch+json (RFC 7386)
  GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}
  GET   /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale           (autoscaling/v1 Scale)
  PATCH /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale           merge patch {"spec":{"replicas":N}}

What it enforces, as the API server would:
  - Authorization: Bearer <token>, with the accepted tokens read from --tokens (one per line)
    on every request, so a test can rotate them; otherwise 401 with a v1 Status body.
  - methods per path (405), known paths (404), Content-Type of PATCH (415), a JSON object
    body (400), query parameters dryRun=All, fieldManager, fieldValidation only (400),
    metadata.resourceVersion in a patch equal to the current one (409 Conflict),
    name/namespace/kind not changed by a patch (400).
  - the patched VirtualService validated like Istio's webhook (422 Invalid): spec.hosts is a
    list of strings; each http route has only HTTPRoute fields; each destination a host;
    weights are integers 0..100 summing to 100 when a route has several destinations;
    header matches are lower-case names with exactly one of exact/prefix/regex.
  - a spec change bumps metadata.generation and resourceVersion; dryRun=All changes nothing.

Deployments roll out in simulated steps (every --tick seconds one replica is updated, and
becomes available one tick later) so `kubectl rollout status` logic can be tested. A
deployment with "stuck": true stops after one updated replica and, after
spec.progressDeadlineSeconds, gets Progressing=False reason ProgressDeadlineExceeded.

Control (no auth, for the specs): GET /_contract/log (every request, JSON list),
GET /_contract/violations, POST /_contract/state (clear the log and violations, replace objects: {"virtualservices":[..],
"deployments":[..]}), POST /_contract/deployment {"namespace","name", "stuck":bool,
"bump":true (new pod template: a rollout)}, GET /healthz.

usage: k8s_contract.py --port P [--cert C --key K] --tokens FILE [--tick 0.1]
"""
import argparse
import copy
import json
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.RLock()
STATE = {"virtualservices": {}, "deployments": {}, "rv": 1000}
LOG = []
VIOLATIONS = []
ARGS = None

VS_PATH = re.compile(r"^/apis/networking\.istio\.io/(v1beta1|v1alpha3|v1)/namespaces/([a-z0-9.-]+)/virtualservices/([a-z0-9.-]+)$")
DEP_PATH = re.compile(r"^/apis/apps/v1/namespaces/([a-z0-9.-]+)/deployments/([a-z0-9.-]+)(/scale)?$")
HTTP_ROUTE_FIELDS = {"name", "match", "route", "redirect", "delegate", "rewrite", "timeout", "retries",
                     "fault", "mirror", "mirrors", "mirrorPercentage", "mirror_percent", "mirrorPercent",
                     "corsPolicy", "headers", "directResponse"}
MATCH_FIELDS = {"name", "uri", "scheme", "method", "authority", "headers", "port", "sourceLabels",
                "gateways", "queryParams", "ignoreUriCase", "withoutHeaders", "sourceNamespace", "statPrefix"}
DEST_FIELDS = {"destination", "weight", "headers"}
DESTINATION_FIELDS = {"host", "subset", "port"}
STRING_MATCH = {"exact", "prefix", "regex"}


class ApiError(Exception):
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


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


def invalid(msg):
    raise ApiError(422, "Invalid", "admission webhook \"validation.istio.io\" denied the request: " + msg)


def validate_string_match(where, m):
    if not isinstance(m, dict) or len(m) != 1 or next(iter(m)) not in STRING_MATCH:
        invalid(f"{where}: a StringMatch needs exactly one of exact, prefix, regex")
    if not isinstance(next(iter(m.values())), str):
        invalid(f"{where}: StringMatch value must be a string")


def validate_vs(vs):
    spec = vs.get("spec")
    if not isinstance(spec, dict):
        invalid("spec: required object")
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        invalid("spec.hosts: a non-empty list of strings")
    routes = spec.get("http", [])
    if not isinstance(routes, list):
        invalid("spec.http: must be a list")
    for i, r in enumerate(routes):
        where = f"spec.http[{i}]"
        if not isinstance(r, dict):
            invalid(f"{where}: must be an object")
        extra = set(r) - HTTP_ROUTE_FIELDS
        if extra:
            invalid(f"{where}: unknown field(s) {sorted(extra)}")
        if "route" not in r and "redirect" not in r and "delegate" not in r and "directResponse" not in r:
            invalid(f"{where}: needs route, redirect, delegate or directResponse")
        for j, m in enumerate(r.get("match", []) or []):
            if not isinstance(m, dict) or set(m) - MATCH_FIELDS:
                invalid(f"{where}.match[{j}]: not an HTTPMatchRequest")
            for name, sm in (m.get("headers") or {}).items():
                if name != name.lower():
                    invalid(f"{where}.match[{j}].headers: header name {name!r} must be lower-case")
                validate_string_match(f"{where}.match[{j}].headers.{name}", sm)
        dests = r.get("route")
        if dests is None:
            continue
        if not isinstance(dests, list) or not dests:
            invalid(f"{where}.route: a non-empty list")
        total = 0
        for j, d in enumerate(dests):
            dw = f"{where}.route[{j}]"
            if not isinstance(d, dict) or set(d) - DEST_FIELDS:
                invalid(f"{dw}: not an HTTPRouteDestination (fields {sorted(DEST_FIELDS)})")
            dst = d.get("destination")
            if not isinstance(dst, dict) or set(dst) - DESTINATION_FIELDS or not isinstance(dst.get("host"), str) or not dst["host"]:
                invalid(f"{dw}.destination: needs host (and optionally subset, port)")
            if "port" in dst and not (isinstance(dst["port"], dict) and isinstance(dst["port"].get("number"), int)):
                invalid(f"{dw}.destination.port: expected {{number: N}}")
            w = d.get("weight", 0 if len(dests) > 1 else 100)
            if not isinstance(w, int) or isinstance(w, bool) or w < 0 or w > 100:
                invalid(f"{dw}.weight: an integer 0..100, got {w!r}")
            total += w
        if len(dests) > 1 and total != 100:
            invalid(f"{where}.route: total destination weight {total} != 100")


def vs_object(ns, name):
    vs = STATE["virtualservices"].get((ns, name))
    if vs is None:
        raise ApiError(404, "NotFound", f'virtualservices.networking.istio.io "{name}" not found')
    return vs


def dep_object(ns, name):
    d = STATE["deployments"].get((ns, name))
    if d is None:
        raise ApiError(404, "NotFound", f'deployments.apps "{name}" not found')
    return d


def scale_of(d):
    m = d["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": m["name"], "namespace": m["namespace"], "resourceVersion": m["resourceVersion"],
                         "uid": m.get("uid", "uid-" + m["name"])},
            "spec": {"replicas": d["spec"]["replicas"]},
            "status": {"replicas": d["status"].get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in sorted(d["spec"]["selector"]["matchLabels"].items()))}}


def check_patch_common(handler, query, body, obj):
    ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
    if ctype != "application/merge-patch+json":
        if ctype in ("application/json-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"):
            raise ApiError(415, "UnsupportedMediaType", f"the contract covers merge patches only, got {ctype}")
        raise ApiError(415, "UnsupportedMediaType",
                       f"the body of the request was in an unknown format - accepted media types include: "
                       f"application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {ctype!r})")
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the patch must be a JSON object")
    rv = (body.get("metadata") or {}).get("resourceVersion")
    if rv is not None and rv != obj["metadata"]["resourceVersion"]:
        raise ApiError(409, "Conflict", "Operation cannot be fulfilled: the object has been modified; "
                                        "please apply your changes to the latest version and try again")
    return query.get("dryRun") == ["All"]


def handle_vs(handler, method, query, body, ns, name, version):
    with LOCK:
        vs = vs_object(ns, name)
        if method == "GET":
            return 200, vs
        if method != "PATCH":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        dry = check_patch_common(handler, query, body, vs)
        new = merge_patch(vs, body)
        for k in ("apiVersion", "kind"):
            if new.get(k) != vs.get(k):
                raise ApiError(400, "BadRequest", f"{k} may not be changed by a patch")
        if new["metadata"].get("name") != name or new["metadata"].get("namespace") != ns:
            raise ApiError(400, "BadRequest", "metadata.name and metadata.namespace may not be changed")
        validate_vs(new)
        if dry:
            return 200, new
        if new.get("spec") != vs.get("spec"):
            new["metadata"]["generation"] = vs["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = next_rv()
        STATE["virtualservices"][(ns, name)] = new
        return 200, new


def handle_dep(handler, method, query, body, ns, name, scale):
    with LOCK:
        d = dep_object(ns, name)
        if method == "GET":
            return 200, scale_of(d) if scale else d
        if method != "PATCH" or not scale:
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")
        dry = check_patch_common(handler, query, body, d)
        extra = set(body) - {"spec", "metadata"}
        spec = body.get("spec")
        if extra or not isinstance(spec, dict) or set(spec) != {"replicas"}:
            raise ApiError(422, "Invalid", "a Scale patch may set spec.replicas only")
        n = spec["replicas"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ApiError(422, "Invalid", f"spec.replicas: Invalid value: {n!r}: must be greater than or equal to 0")
        if dry:
            out = scale_of(d)
            out["spec"]["replicas"] = n
            return 200, out
        if n != d["spec"]["replicas"]:
            d["spec"]["replicas"] = n
            d["metadata"]["generation"] += 1
            d["_progress_at"] = time.monotonic()
        d["metadata"]["resourceVersion"] = next_rv()
        return 200, scale_of(d)


def public(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def tick_deployments():
    """One controller step for every deployment."""
    now = time.monotonic()
    with LOCK:
        for d in STATE["deployments"].values():
            st, spec, meta = d["status"], d["spec"], d["metadata"]
            changed = False
            if st.get("observedGeneration", 0) < meta["generation"]:
                st["observedGeneration"] = meta["generation"]
                set_condition(d, "Progressing", "True", "ReplicaSetUpdated")
                changed = True
            else:
                want = spec["replicas"]
                old = d.get("_old", 0)
                upd, avail = st.get("updatedReplicas", 0), st.get("availableReplicas", 0)
                if d.get("_stuck"):
                    if upd < min(1, want):
                        upd += 1
                        d["_progress_at"] = now
                    deadline = spec.get("progressDeadlineSeconds", 600)
                    if now - d.get("_progress_at", now) > deadline and cond_reason(d) != "ProgressDeadlineExceeded":
                        set_condition(d, "Progressing", "False", "ProgressDeadlineExceeded")
                        changed = True
                else:
                    if avail < upd:
                        avail = upd  # ready one tick after it was created
                    elif upd < want:
                        upd += 1
                    elif upd > want:
                        upd = want
                        avail = min(avail, upd)
                    elif old > 0:
                        old -= 1
                    elif cond_reason(d) != "NewReplicaSetAvailable":
                        set_condition(d, "Progressing", "True", "NewReplicaSetAvailable")
                    d["_progress_at"] = now
                d["_old"] = old
                new = {"updatedReplicas": upd, "availableReplicas": min(avail, upd) + old,
                       "readyReplicas": min(avail, upd) + old, "replicas": upd + old}
                for k, v in new.items():
                    if st.get(k) != v:
                        st[k] = v
                        changed = True
            if changed:
                meta["resourceVersion"] = next_rv()


def cond_reason(d):
    for c in d["status"].get("conditions", []):
        if c["type"] == "Progressing":
            return c.get("reason")
    return None


def set_condition(d, ctype, status, reason):
    conds = [c for c in d["status"].get("conditions", []) if c["type"] != ctype]
    conds.append({"type": ctype, "status": status, "reason": reason,
                  "message": f"{reason} (contract server)",
                  "lastUpdateTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    d["status"]["conditions"] = conds


def load_state(data):
    with LOCK:
        LOG.clear()
        VIOLATIONS.clear()
        STATE["virtualservices"].clear()
        STATE["deployments"].clear()
        for vs in data.get("virtualservices", []):
            vs = copy.deepcopy(vs)
            m = vs.setdefault("metadata", {})
            m.setdefault("generation", 1)
            m["resourceVersion"] = next_rv()
            vs.setdefault("apiVersion", "networking.istio.io/v1beta1")
            vs.setdefault("kind", "VirtualService")
            STATE["virtualservices"][(m["namespace"], m["name"])] = vs
        for d in data.get("deployments", []):
            d = copy.deepcopy(d)
            m = d.setdefault("metadata", {})
            m.setdefault("generation", 1)
            m["resourceVersion"] = next_rv()
            d.setdefault("apiVersion", "apps/v1")
            d.setdefault("kind", "Deployment")
            n = d["spec"]["replicas"]
            d.setdefault("status", {"observedGeneration": m["generation"], "replicas": n, "updatedReplicas": n,
                                    "readyReplicas": n, "availableReplicas": n})
            STATE["deployments"][(m["namespace"], m["name"])] = d


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
            return 200, {"virtualservices": list(STATE["virtualservices"].values()),
                         "deployments": [public(d) for d in STATE["deployments"].values()]}
    if path == "/_contract/deployment" and method == "POST":
        with LOCK:
            d = dep_object(body["namespace"], body["name"])
            if "stuck" in body:
                d["_stuck"] = bool(body["stuck"])
                d["_progress_at"] = time.monotonic()
            if body.get("bump"):
                d["_old"] = d["status"].get("replicas", 0)
                d["status"]["updatedReplicas"] = 0
                d["status"]["availableReplicas"] = d["_old"]
                d["metadata"]["generation"] += 1
                d["_progress_at"] = time.monotonic()
            return 200, public(d)
    if path == "/healthz":
        return 200, {"ok": True}
    raise ApiError(404, "NotFound", "no such control path " + path)


def accepted_tokens():
    try:
        with open(ARGS.tokens) as f:
            return {l.strip() for l in f if l.strip()}
    except OSError:
        return set()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
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
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or auth[7:] not in accepted_tokens():
                raise ApiError(401, "Unauthorized", "Unauthorized")
            for k in query:
                if k not in ("dryRun", "fieldManager", "fieldValidation"):
                    raise ApiError(400, "BadRequest", f"unknown query parameter {k!r}")
            if "dryRun" in query and query["dryRun"] != ["All"]:
                raise ApiError(400, "BadRequest", "dryRun must be All")
            accept = self.headers.get("Accept")
            if accept and "json" not in accept and "*/*" not in accept:
                raise ApiError(406, "NotAcceptable", f"cannot produce {accept}")
            if self.command in ("PATCH", "PUT", "POST") and not raw:
                raise ApiError(400, "BadRequest", "empty body")
            if self.command == "GET" and raw:
                VIOLATIONS.append({"request": entry, "why": "GET with a body"})
            m = VS_PATH.match(path)
            if m:
                code, obj = handle_vs(self, self.command, query, body, m.group(2), m.group(3), m.group(1))
            else:
                m = DEP_PATH.match(path)
                if not m:
                    raise ApiError(404, "NotFound", "the server could not find the requested resource")
                code, obj = handle_dep(self, self.command, query, body, m.group(1), m.group(2), bool(m.group(3)))
            entry["status"] = code
            self.send_json(code, public(obj))
        except ApiError as e:
            entry["status"] = e.code
            entry["error"] = e.message
            if e.code in (400, 405, 406, 415, 422):
                VIOLATIONS.append({"request": entry, "why": e.message})
            self.send_json(e.code, status_body(e.code, e.reason, e.message))
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
    p.add_argument("--tokens", required=True)
    p.add_argument("--state")
    p.add_argument("--tick", type=float, default=0.1)
    ARGS = p.parse_args()
    if ARGS.state:
        with open(ARGS.state) as f:
            load_state(json.load(f))
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)

    def ticker():
        while True:
            time.sleep(ARGS.tick)
            tick_deployments()
    threading.Thread(target=ticker, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
