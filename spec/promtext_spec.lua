-- promtext: the Prometheus text format parser, checked against Debian's
-- python3-prometheus-client on live expositions of real servers and on captured fixtures.
local promtext = require("rollout.promtext")
local fs = require("rollout.fs")

local ROOT = debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or "."
local FIXTURES = ROOT .. "/spec/fixtures/promtext/"
local REF = ROOT .. "/tools/promtext_ref.py"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- {code, stdout, stderr} of argv: proc.run when the host has it, else a blocking popen.
local function run(argv, timeout)
  local ok, proc = pcall(require, "rollout.proc")
  if ok then return proc.run { argv = argv, timeout = timeout } end
  local quoted = {}
  for i, a in ipairs(argv) do quoted[i] = shell_quote(a) end
  local errfile = os.tmpname()
  local p = assert(io.popen(table.concat(quoted, " ") .. " 2>" .. errfile, "r"))
  local out = p:read("a")
  local _, _, code = p:close()
  local err = read(errfile)
  os.remove(errfile)
  return { code = code, stdout = out, stderr = err }
end

-- Starts a real server on free loopback ports in a temp dir, fetches /metrics, stops it
-- by its PID (from the trap, whatever happens). Recipes: spec/support/servers.lua. A server that
-- dies before it is ready (a port taken between the check and the bind, on a busy
-- machine) is retried on new ports, up to three times.
local CAPTURE = [=[
set -u
kind=$1; out=$2; dir=$3
# ports below the ephemeral range (32768+), so no outgoing connection can be holding one;
# within $ROLLOUT_TEST_PORTS (LO-HI) when `rollout test -j` runs spec files side by side
ports=${ROLLOUT_TEST_PORTS:-}; lo=${ports%-*}; hi=${ports#*-}
case "$lo$hi" in ''|*[!0-9]*) lo=10000 hi=31999 ;; esac
free_port() { local p
  while :; do p=$(( lo + RANDOM % (hi - lo + 1) )); ss -ltnH "sport = :$p" | grep -q . || { echo $p; return; }; done; }
wait_ready() { local url=$1 t0=$(date +%s%N)
  until curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || return 1
    (( ($(date +%s%N)-t0)/1000000000 >= 30 )) && return 1; sleep 0.05; done; }
stop() { [ -n "$pid" ] && kill -TERM $pid 2>/dev/null; [ -n "$pid" ] && wait $pid 2>/dev/null; pid=; }
pid=
trap stop EXIT
start() {
  rm -rf $dir/data
  case $kind in
  prometheus)
    port=$(free_port)
    printf '%s\n' "global:" "  scrape_interval: 1s" "scrape_configs:" "  - job_name: self" "    static_configs:" \
      "      - targets: [\"127.0.0.1:$port\"]" > $dir/cfg.yml
    prometheus --config.file=$dir/cfg.yml --storage.tsdb.path=$dir/data --web.listen-address=127.0.0.1:$port \
      --log.level=warn >$dir/log 2>&1 &
    pid=$!; url=http://127.0.0.1:$port/metrics; ready=http://127.0.0.1:$port/-/ready ;;
  haproxy)
    port=$(free_port); port2=$(free_port); p1=$(free_port)
    printf '%s\n' global "    stats socket $dir/haproxy.sock mode 600 level admin" defaults "    mode http" \
      "    timeout connect 2s" "    timeout client 30s" "    timeout server 30s" \
      "frontend fe" "    bind 127.0.0.1:$port" "    default_backend be" \
      "frontend prom" "    bind 127.0.0.1:$port2" \
      "    http-request use-service prometheus-exporter if { path /metrics }" \
      "backend be" "    balance roundrobin" "    server baseline 127.0.0.1:$p1 weight 100" \
      "    server canary 127.0.0.1:$p1 weight 0" > $dir/haproxy.cfg
    haproxy -db -f $dir/haproxy.cfg >$dir/log 2>&1 &
    pid=$!; url=http://127.0.0.1:$port2/metrics; ready=$url ;;
  etcd)
    c=$(free_port); p=$(free_port)
    etcd --name n1 --data-dir $dir/data \
      --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \
      --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \
      --initial-cluster n1=http://127.0.0.1:$p --initial-cluster-state new --log-level warn --logger zap \
      >$dir/log 2>&1 &
    pid=$!; url=http://127.0.0.1:$c/metrics; ready=http://127.0.0.1:$c/health ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
  esac
}
for attempt in 1 2 3; do
  start
  if wait_ready $ready; then curl -fsS --max-time 10 -o "$out" "$url"; exit; fi
  echo "$kind attempt $attempt: not ready" >&2; tail -5 $dir/log >&2
  stop
done
exit 1
]=]

local function capture(kind, dir)
  local out = dir .. "/" .. kind .. ".prom"
  local r = run({ "bash", "-c", CAPTURE, "capture", kind, out, dir }, 60)
  assert(r.code == 0, kind .. " capture failed (" .. tostring(r.code) .. "): " .. tostring(r.stderr))
  return read(out), out
end

-- The Python client's parse of a file, as loaded from tools/promtext_ref.py's Lua dump.
local function python_parse(path)
  local r = run({ "/usr/bin/python3", REF, "dump", path }, 60)
  assert(r.code == 0, "promtext_ref.py failed: " .. tostring(r.stderr))
  local ref = assert(load(r.stdout, "=promtext_ref", "t", {}))()
  for _, f in ipairs(ref.families) do
    if f.type == "unknown" then f.type = "untyped" end -- the client's name for untyped
  end
  return ref
end

-- Our parse seen through the client's conventions: counter families named without
-- "_total" (and samples renamed to it when the name lacked it), help "" when absent.
local function python_view(result)
  local fams = {}
  for _, f in ipairs(result.families) do
    local name, samples = f.name, {}
    for i, s in ipairs(f.samples) do
      samples[i] = { name = s.name, labels = s.labels, value = s.value, timestamp = s.timestamp }
    end
    if f.type == "counter" then
      if name:sub(-6) == "_total" then
        name = name:sub(1, -7)
      else
        for _, s in ipairs(samples) do s.name = s.name .. "_total" end
      end
    end
    fams[#fams + 1] = { name = name, type = f.type, help = f.help or "", samples = samples }
  end
  return fams
end

-- The client makes each undeclared sample a family of its own; we group consecutive
-- ones by name. Merge those runs on both sides before comparing.
local function merge_untyped_runs(fams)
  local out = {}
  for _, f in ipairs(fams) do
    local last = out[#out]
    if last and f.type == "untyped" and last.type == "untyped" and last.name == f.name
        and f.help == "" and last.help == "" then
      for _, s in ipairs(f.samples) do last.samples[#last.samples + 1] = s end
    else
      out[#out + 1] = f
    end
  end
  return out
end

local function same_number(a, b) return a == b or (a ~= a and b ~= b) end

local function label_diff(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return k end end
  for k in pairs(b) do if a[k] == nil then return k end end
end

-- nil when equal, else a description of the first difference.
local function compare_with_python(result, ref)
  local mine, theirs = merge_untyped_runs(python_view(result)), merge_untyped_runs(ref.families)
  if result.nsamples ~= ref.nsamples then
    return ("nsamples %d, python %d"):format(result.nsamples, ref.nsamples)
  end
  if #mine ~= #theirs then return ("%d families, python %d"):format(#mine, #theirs) end
  for i, a in ipairs(mine) do
    local b = theirs[i]
    for _, k in ipairs { "name", "type", "help" } do
      if a[k] ~= b[k] then return ("family %d %s: %q, python %q"):format(i, k, a[k], b[k]) end
    end
    if #a.samples ~= #b.samples then
      return ("family %s: %d samples, python %d"):format(a.name, #a.samples, #b.samples)
    end
    for j, s in ipairs(a.samples) do
      local t = b.samples[j]
      if s.name ~= t.name then return ("%s[%d] name %s, python %s"):format(a.name, j, s.name, t.name) end
      if not same_number(s.value, t.value) then
        return ("%s[%d] value %.17g, python %.17g"):format(a.name, j, s.value, t.value)
      end
      if s.timestamp ~= t.timestamp then return ("%s[%d] timestamp differs"):format(a.name, j) end
      local k = label_diff(s.labels, t.labels)
      if k then return ("%s[%d] label %s: %s, python %s"):format(a.name, j, k, s.labels[k], t.labels[k]) end
    end
  end
end

local function family(result, name)
  for _, f in ipairs(result.families) do if f.name == name then return f end end
end

local function sample(fam, labels)
  for _, s in ipairs(fam.samples) do
    local hit = true
    for k, v in pairs(labels) do hit = hit and s.labels[k] == v end
    if hit then return s end
  end
end

local function count_samples(result)
  local n = 0
  for _, f in ipairs(result.families) do n = n + #f.samples end
  return n
end

describe("promtext.parse", function()
  local edge = read(FIXTURES .. "edge.prom")

  it("reads the format's corners exactly as python3-prometheus-client does", function()
    local r, err = promtext.parse(edge)
    assert.is_nil(err)
    assert.is_nil(compare_with_python(r, python_parse(FIXTURES .. "edge.prom")))
  end)

  it("unescapes label values and HELP text", function()
    local r = assert(promtext.parse(edge))
    local f = family(r, "escapes_total")
    assert.equals("counter", f.type)
    assert.equals("Help with a backslash \\ and a newline \n and a stray \\t kept.", f.help)
    assert.same({ path = "C:\\DIR\\FILE.TXT", error = 'Cannot find file:\n"FILE.TXT"' }, f.samples[1].labels)
    assert.same({ quote = '"', comma = "a,b", brace = "}{", eq = "x=y", empty = "" }, f.samples[2].labels)
    assert.same({ utf8 = "päth ✓", trailing = "comma" }, f.samples[3].labels)
    assert.equals(1.458255915e9, f.samples[1].value)
  end)

  it("reads NaN, +Inf, -Inf and numbers that need correct rounding", function()
    local f = family(assert(promtext.parse(edge)), "specials")
    local v = {}
    for _, s in ipairs(f.samples) do v[s.labels.v] = s.value end
    assert.is_true(v.nan ~= v.nan)
    assert.equals(math.huge, v["+inf"])
    assert.equals(-math.huge, v["-inf"])
    assert.equals(-0.5, v.neg)
    assert.equals(6.02214076e+23, v.exp)
    assert.equals(1e-300, v.tiny)
    assert.equals(3.141592653589793, v.long)
    assert.equals(9007199254740992.0, v.int) -- 2^53 + 1 rounds to even
    assert.equals("float", math.type(v.int))
  end)

  it("keeps millisecond timestamps as integers, nil when absent", function()
    local r = assert(promtext.parse(edge))
    local f = family(r, "stamped")
    assert.equals(0, f.samples[1].timestamp)
    assert.equals(1395066363000, f.samples[2].timestamp)
    assert.equals("integer", math.type(f.samples[2].timestamp))
    assert.equals(-3982045, f.samples[3].timestamp)
    assert.is_nil(family(r, "specials").samples[1].timestamp)
    assert.equals(200, family(r, "tabbed").samples[1].timestamp)
  end)

  it("groups histogram and summary samples under their declared family", function()
    local r = assert(promtext.parse(edge))
    local h = family(r, "http_request_duration_seconds")
    assert.equals("histogram", h.type)
    assert.equals("A histogram of the request duration.", h.help)
    assert.equals(6, #h.samples)
    assert.equals("http_request_duration_seconds_bucket", h.samples[1].name)
    assert.same({ le = "+Inf" }, h.samples[4].labels)
    assert.equals("http_request_duration_seconds_count", h.samples[6].name)
    local s = family(r, "rpc_duration_seconds")
    assert.equals("summary", s.type)
    assert.equals(5, #s.samples)
    assert.same({ quantile = "0.99" }, s.samples[3].labels)
    assert.equals(1.7560473e+07, s.samples[4].value)
  end)

  it("makes undeclared samples untyped families and keeps families without samples", function()
    local r = assert(promtext.parse(edge))
    local names = {}
    for i, f in ipairs(r.families) do names[i] = f.name end
    assert.same({ "escapes_total", "specials", "stamped", "rpc_duration_seconds",
      "http_request_duration_seconds", "metric_without_timestamp_and_labels", "untyped_pair",
      "declared_untyped", "spaced_out", "tabbed", "no_samples", "last_line_no_newline" }, names)
    local pair = family(r, "untyped_pair")
    assert.equals("untyped", pair.type)
    assert.is_nil(pair.help)
    assert.equals(2, #pair.samples)
    assert.equals("untyped", family(r, "declared_untyped").type)
    assert.same({ a = "1", b = "2" }, family(r, "spaced_out").samples[1].labels)
    assert.equals(0, #family(r, "no_samples").samples)
    assert.equals(12, r.nfamilies)
    assert.equals(count_samples(r), r.nsamples)
  end)

  it("accepts CRLF line endings and returns the same parse", function()
    local lf = assert(promtext.parse(edge))
    local crlf = assert(promtext.parse((edge:gsub("\n", "\r\n"))))
    assert.same(lf, crlf)
  end)

  it("materialises only the families asked for, still checking the whole text", function()
    local r = assert(promtext.parse(edge, { family = { "specials", "stamped" } }))
    assert.equals(2, #r.families)
    assert.equals("specials", r.families[1].name)
    assert.equals(12, r.nfamilies)
    assert.equals(1, #assert(promtext.parse(edge, { family = "tabbed" })).families)
    local v, err = promtext.parse(edge .. "\nbroken{", { family = "tabbed" })
    assert.is_nil(v)
    assert.equals(("line %d: unterminated label set"):format(select(2, edge:gsub("\n", "")) + 2), err)
    assert.has_error(function() promtext.parse(edge, { familly = "x" }) end, "unknown option 'familly'")
    assert.has_error(function() promtext.parse(edge, { family = 3 }) end, "opts.family")
    assert.has_error(function() promtext.parse(nil) end)
  end)

  it("stays correct when a __gc finalizer parses in the middle of a parse", function()
    local text = read(FIXTURES .. "etcd-3.4.prom")
    local expected = assert(promtext.parse(text))
    local ran = 0
    local function finalizer()
      local r = promtext.parse('inner{a="1"} 1')
      if r and r.families[1].name == "inner" then ran = ran + 1 end
    end
    collectgarbage()
    for _ = 1, 500 do setmetatable({}, { __gc = finalizer }) end
    -- Minor collections come often in generational mode: the young finalizable objects
    -- are finalized by the collector steps that the parse's own allocations trigger.
    local mode = collectgarbage("generational")
    local ok, got = pcall(promtext.parse, text)
    local during = ran
    collectgarbage(mode)
    collectgarbage()
    assert.truthy(ok, got)
    assert.truthy(during > 0, "no finalizer ran during the parse: the test proves nothing")
    assert.same(expected, got)
  end)

  it("parses empty input and comment-only input as no families", function()
    for _, text in ipairs { "", "\n\n", "# just a comment\n", "   \n\t\n" } do
      local r = assert(promtext.parse(text))
      assert.equals(0, r.nfamilies)
      assert.equals(0, r.nsamples)
      assert.same({}, r.families)
    end
  end)
end)

describe("promtext.parse on malformed input", function()
  local cases = {
    { 'ok 1\nx{a="b} 1', 2, "unterminated value of label a" },
    { 'x{a="b\\"} 1', 1, "unterminated value of label a" },
    { 'x{a="\\t"} 1', 1, "invalid escape \\t in the value of label a" },
    { 'x{a="b"}', 1, "missing value for x" },
    { "ok 1\n\nx", 3, "missing value for x" },
    { "# TYPE x counter\n# TYPE x gauge", 2, "duplicate TYPE for x" },
    { "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a counter", 5, "duplicate TYPE for a" },
    { "x 1\n# TYPE x counter", 2, "TYPE for x after its samples" },
    { "# HELP x one\n# HELP x two", 2, "duplicate HELP for x" },
    { "# TYPE x summary_of_things", 1, 'unknown type "summary_of_things"' },
    { "# TYPE x", 1, "TYPE line for x without a type" },
    { "# HELP", 1, "HELP line without a valid metric name" },
    { "x 1.2.3", 1, 'bad value "1.2.3"' },
    { "x one", 1, 'bad value "one"' },
    { "x 1 12.5", 1, 'bad timestamp "12.5"' },
    { "x 1 99999999999999999999", 1, "bad timestamp" },
    { "x 1 2 3", 1, 'unexpected text "3" after the timestamp' },
    { 'x{a="1",a="2"} 1', 1, "duplicate label a" },
    { 'x{a="1" b="2"} 1', 1, "expected ',' or '}' after the value of label a" },
    { 'x{a="1"', 1, "unterminated label set" },
    { "x{a=1} 1", 1, "expected '\"' to open the value of label a" },
    { 'x{a "1"} 1', 1, "expected '=' after label a" },
    { 'x{0a="1"} 1', 1, "invalid label name" },
    { "0x 1", 1, "invalid metric name" },
    { "x-y 1", 1, "invalid character '-' in metric name x" },
    { "# TYPE h histogram\nh 1", 2, "sample h of histogram needs a _bucket, _sum or _count suffix" },
  }
  for _, c in ipairs(cases) do
    it(("names line %d for %q"):format(c[2], c[1]), function()
      local r, err = promtext.parse(c[1])
      assert.is_nil(r)
      assert.equals(("line %d: %s"):format(c[2], c[3]), err:sub(1, #("line %d: %s"):format(c[2], c[3])))
    end)
  end

  it("names the line of a fault deep inside a real exposition", function()
    local lines = {}
    for l in read(FIXTURES .. "etcd-3.4.prom"):gmatch("[^\n]*") do lines[#lines + 1] = l end
    for _, n in ipairs { 1, 777, 1400 } do
      local copy = table.move(lines, 1, #lines, 1, {})
      copy[n] = 'broken{le="0.5} 1'
      local r, err = promtext.parse(table.concat(copy, "\n"))
      assert.is_nil(r)
      assert.equals(("line %d: unterminated value of label le"):format(n), err)
    end
  end)

  it("never raises or crashes on mutated real expositions", function()
    -- Under `make asan` this is also a memory-safety check: the parser reads only its input.
    local seeds = { read(FIXTURES .. "edge.prom"), read(FIXTURES .. "haproxy-2.6.prom"):sub(1, 6000) }
    local alphabet = '{}",=\\ \t\n#_e.+-0123456789aNInf'
    math.randomseed(20240611)
    local parsed, failed = 0, 0
    for i = 1, 3000 do
      local s = seeds[i % #seeds + 1]
      for _ = 1, math.random(1, 4) do
        local pos, op = math.random(1, #s), math.random(3)
        local ch = alphabet:sub(math.random(#alphabet)):sub(1, 1)
        if op == 1 then s = s:sub(1, pos - 1) .. ch .. s:sub(pos + 1)
        elseif op == 2 then s = s:sub(1, pos - 1) .. s:sub(pos + 1)
        else s = s:sub(1, pos) .. ch .. s:sub(pos + 1) end
      end
      local r, err = promtext.parse(s)
      if r then parsed = parsed + 1 else
        failed = failed + 1
        assert.matches("^line %d+: %S", err)
      end
      local prefix = s:sub(1, math.random(0, #s))
      local _, perr = promtext.parse(prefix)
      local sel, sel_err = promtext.select(prefix, {})
      if perr then assert.equals(perr, sel_err) else assert.truthy(sel) end
    end
    assert.truthy(parsed > 0 and failed > 0, ("parsed %d, failed %d"):format(parsed, failed))
  end)
end)

describe("promtext.parse on real targets", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("promtext-spec")) end)
  after_each(function() if dir then fs.rmtree(dir) end end)

  local checks = {
    prometheus = function(r)
      local f = family(r, "prometheus_http_requests_total")
      assert.equals("counter", f.type)
      local h = family(r, "prometheus_http_request_duration_seconds")
      assert.equals("histogram", h.type)
      assert.truthy(sample(h, { le = "+Inf" }))
      assert.equals("summary", family(r, "go_gc_duration_seconds").type)
    end,
    haproxy = function(r)
      local f = family(r, "haproxy_server_http_responses_total")
      assert.equals("counter", f.type)
      assert.truthy(sample(f, { proxy = "be", server = "canary", code = "5xx" }))
      assert.equals(100, sample(family(r, "haproxy_server_weight"), { server = "baseline" }).value)
      assert.equals(0, sample(family(r, "haproxy_server_weight"), { server = "canary" }).value)
    end,
    etcd = function(r)
      assert.equals(1, family(r, "etcd_server_has_leader").samples[1].value)
      assert.equals("histogram", family(r, "etcd_disk_wal_fsync_duration_seconds").type)
    end,
  }

  for _, kind in ipairs { "prometheus", "haproxy", "etcd" } do
    it("parses a live " .. kind .. " /metrics as python3-prometheus-client does", function()
      local text, path = capture(kind, dir)
      local r, err = promtext.parse(text)
      assert.is_nil(err)
      assert.truthy(r.nfamilies > 50, kind .. " exposed only " .. r.nfamilies .. " families")
      assert.is_nil(compare_with_python(r, python_parse(path)))
      checks[kind](r)
    end, { timeout = 90 })
  end

  it("would notice a difference from python3-prometheus-client", function()
    local path = FIXTURES .. "haproxy-2.6.prom"
    local ref = python_parse(path)
    local function changed(edit)
      local r = assert(promtext.parse(read(path)))
      edit(r, family(r, "haproxy_server_http_responses_total"))
      return compare_with_python(r, ref)
    end
    assert.is_nil(changed(function() end))
    assert.matches("value", changed(function(_, f) f.samples[2].value = f.samples[2].value + 1 end))
    assert.matches("label code", changed(function(_, f) f.samples[2].labels.code = "6xx" end))
    assert.matches("name", changed(function(_, f) f.samples[2].name = "other" end))
    assert.matches("samples", changed(function(_, f) table.remove(f.samples) end))
    assert.is_string(changed(function(_, f) f.type = "gauge" end)) -- shows as a name: the client renames counters
    assert.matches("families", changed(function(r) table.remove(r.families, 7) end))
  end)

  for _, file in ipairs { "prometheus-2.42.prom", "haproxy-2.6.prom", "etcd-3.4.prom" } do
    it("parses the captured " .. file .. " as python3-prometheus-client does", function()
      local r = assert(promtext.parse(read(FIXTURES .. file)))
      assert.is_nil(compare_with_python(r, python_parse(FIXTURES .. file)))
      checks[file:match("^%a+")](r)
    end)
  end
end)

describe("promtext.select", function()
  local haproxy = read(FIXTURES .. "haproxy-2.6.prom")
  local prom = read(FIXTURES .. "prometheus-2.42.prom")

  -- The same aggregation computed from the full parse, as an independent reference.
  local function reference_sum(text, name, pred, group_by)
    local total, n, groups = 0, 0, {}
    for _, f in ipairs(assert(promtext.parse(text)).families) do
      for _, s in ipairs(f.samples) do
        if s.name == name and pred(s.labels) then
          total, n = total + s.value, n + 1
          if group_by then
            local k = s.labels[group_by] or ""
            groups[k] = (groups[k] or 0) + s.value
          end
        end
      end
    end
    return total, n, groups
  end

  it("sums samples by name and label matchers, grouped by a label", function()
    local r = assert(promtext.select(haproxy, {
      { name = "haproxy_server_http_responses_total", labels = { proxy = "be" }, group_by = "server" },
      { name = "haproxy_server_http_responses_total", labels = { proxy = "be", code = { re = "[45]xx" } } },
      { name = "haproxy_server_http_responses_total",
        labels = { code = { nre = "[45]xx" }, server = { ne = "baseline" } } },
      { name = "haproxy_server_weight", group_by = "server" },
      { name = "no_such_metric" },
    }))
    local total, n, groups = reference_sum(haproxy, "haproxy_server_http_responses_total",
      function(l) return l.proxy == "be" end, "server")
    assert.equals(total, r[1].value)
    assert.equals(n, r[1].samples)
    assert.same(groups, r[1].groups)
    assert.truthy(n >= 12) -- two servers, six code classes
    local _, n2 = reference_sum(haproxy, "haproxy_server_http_responses_total",
      function(l) return l.proxy == "be" and (l.code == "4xx" or l.code == "5xx") end)
    assert.equals(n2, r[2].samples)
    local _, n3 = reference_sum(haproxy, "haproxy_server_http_responses_total",
      function(l) return l.code ~= "4xx" and l.code ~= "5xx" and l.server ~= "baseline" end)
    assert.equals(n3, r[3].samples)
    assert.same({ baseline = 100, canary = 0 }, r[4].groups)
    assert.is_nil(r[5].value) -- no data is never 0
    assert.equals(0, r[5].samples)
  end)

  it("treats a missing label as the empty string, as PromQL does", function()
    local text = 'x{a="1"} 1\nx{a="2",b=""} 2\nx{a="3",b="z"} 4\n'
    local r = assert(promtext.select(text, {
      { name = "x", labels = { b = "" } }, { name = "x", labels = { b = { ne = "" } } },
      { name = "x", group_by = "b" },
    }))
    assert.equals(3, r[1].value)
    assert.equals(4, r[2].value)
    assert.same({ [""] = 3, z = 4 }, r[3].groups)
  end)

  it("sums histogram buckets by le across matching series", function()
    local fam = "prometheus_http_request_duration_seconds"
    local r = assert(promtext.select(prom, {
      { histogram = fam }, { histogram = fam, labels = { handler = "/-/ready" } },
      { histogram = fam, group_by = "handler" },
    }))
    local by_le, sum, count, nbuckets = {}, 0, 0, 0
    for _, s in ipairs(family(assert(promtext.parse(prom)), fam).samples) do
      if s.name == fam .. "_bucket" then
        local le = tonumber(s.labels.le) or math.huge
        by_le[le] = (by_le[le] or 0) + s.value
        nbuckets = nbuckets + 1
      elseif s.name == fam .. "_sum" then sum = sum + s.value
      else count = count + s.value end
    end
    local all = r[1]
    assert.equals(nbuckets, all.samples)
    assert.equals(sum, all.sum)
    assert.equals(count, all.count)
    assert.equals(math.huge, all.buckets[#all.buckets].le)
    for i, b in ipairs(all.buckets) do
      assert.equals(by_le[b.le], b.count)
      if i > 1 then assert.truthy(b.le > all.buckets[i - 1].le and b.count >= all.buckets[i - 1].count) end
    end
    local ready = r[2]
    assert.truthy(ready.count >= 1, "the capture asked /-/ready at least once")
    assert.equals(ready.count, ready.buckets[#ready.buckets].count)
    assert.same(ready.buckets, r[3].groups["/-/ready"].buckets)
  end)

  it("returns nil, 'line N: ...' for malformed text", function()
    local v, err = promtext.select("x 1\ny{", { { name = "x" } })
    assert.is_nil(v)
    assert.equals("line 2: unterminated label set", err)
    v, err = promtext.select('# TYPE h histogram\nh_bucket{le="soon"} 1\n', { { histogram = "h" } })
    assert.is_nil(v)
    assert.equals("line 2: h_bucket without a valid le label", err)
  end)

  it("raises on bad selectors, naming the key", function()
    assert.has_error(function() promtext.select("", { { nam = "x" } }) end, "selectors[1]: unknown key 'nam'")
    assert.has_error(function() promtext.select("", { { name = "x", histogram = "y" } }) end,
      "exactly one of name, histogram")
    assert.has_error(function() promtext.select("", { {} }) end, "exactly one of name, histogram")
    assert.has_error(function() promtext.select("", { { name = "x", labels = { a = { re = "(" } } } }) end,
      "selectors[1].labels.a: bad regex")
    assert.has_error(function() promtext.select("", { { name = "x", labels = { a = { like = "b" } } } }) end,
      "unknown key 'like'")
    assert.has_error(function() promtext.select("", { { name = "x", labels = { a = 1 } } }) end,
      "selectors[1].labels.a")
    assert.has_error(function() promtext.select("", { { name = "x", group_by = {} } }) end, "group_by must be a string")
    assert.has_error(function() promtext.select("", "x") end)
  end)
end)
