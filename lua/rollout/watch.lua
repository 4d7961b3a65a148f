-- rollout.watch: follow a running rollout live (rollout watch). Two sources feed a
-- rollout.watch_view:
--
--   socket(path)          the control socket's machine mode, `watch SEQ 1`: a long poll that
--                         answers as soon as an event is recorded (or after 1 s) with the
--                         new events and the engine's status. When the socket closes (the
--                         rollout ended and `rollout run` exits), the journal whose path the
--                         server gave is read for the events not seen yet (the outcome).
--   etcd(url, id, prefix) fleet mode: the rollout's replicated events after the last seq and
--                         its status every 0.5 s; the playbook's stages and triggers come from
--                         the submitted bundle.
--
-- run() draws: on a terminal the whole view redrawn in place (cursor home, each line cleared,
-- the rest of the screen cleared), colour unless NO_COLOR is set or TERM is dumb; otherwise
-- one line per change (each event a person needs, as rollout.output prints it). It returns
-- when the rollout ends, with its outcome.
--
-- Error policy: connect problems return nil, err, reason (rollout.exit.REASON: "not_found"
-- for no socket at the path or no such id in etcd, "unreachable" otherwise; the command
-- exits with its code); a source that goes
-- away before the outcome is known returns nil, err the same way. Nothing here raises for an
-- operational failure.
local rollout = require("rollout")
local control = require("rollout.control")
local journal = require("rollout.journal")
local json = require("rollout.json")
local fs = require("rollout.fs")
local term = require("rollout.term")
local watch_view = require("rollout.watch_view")
local fleet = require("rollout.fleet")
local etcd = require("rollout.etcd")
local codec = require("rollout.codec")
local playbook = require("rollout.playbook")

local M = {}

-- ---- sources --------------------------------------------------------------------------------

--- socket(path) -> source | nil, err, reason. source:poll() -> {events=, status=, stages=, triggers=} |
--- nil, "ended" (then source.rest holds the journal's remaining events) | nil, err
function M.socket(path)
  local client, err, why = control.connect(path, 5)
  if not client then return nil, err, why end
  local src = { client = client, seq = 0, path = path }
  function src.poll(self)
    local res, rerr = self.client:request("watch " .. self.seq .. " 1", 15)
    if not res then
      self.client:close()
      return nil, "closed: " .. tostring(rerr)
    end
    if not res.ok then return nil, tostring(res.error or res.text) end
    local v = res.value or {}
    self.seq = v.seq or self.seq
    self.journal = v.journal or self.journal
    return { events = v.events or {}, status = v.status, stages = v.stages, triggers = v.triggers, missed = v.missed }
  end
  --- after(last) -> the journal's events after the last one the view saw ({event=, t=})
  function src.after(self, last)
    if not self.journal then return {} end
    local data = fs.read(self.journal)
    if not data then return {} end
    local list = {}
    for line in data:gmatch("[^\n]+") do
      local ok, ev = pcall(json.decode, line)
      if ok and type(ev) == "table" and ev.event and ev.event ~= "engine_started" then list[#list + 1] = ev end
    end
    local from = 1
    if last then
      for i = #list, 1, -1 do
        if list[i].event == last.event and list[i].t == last.t then from = i + 1; break end
      end
    end
    return table.move(list, from, #list, 1, {})
  end
  function src.close(self) pcall(self.client.close, self.client) end
  return src
end

--- etcd(url, id, prefix) -> source | nil, err, reason
function M.etcd(url, id, prefix)
  local c = etcd.new({ url = url, timeout = 5 })
  local K = fleet.keys(prefix)
  local s, err, why = fleet.status(c, K, id)
  if not s then return nil, err, why end
  local src = { seq = 0, first = true }
  -- the playbook's shape from the submitted bundle (a copy in a temp dir, loaded, removed)
  local function shape()
    local raw = c:get(K.spec(id))
    local ok, b = pcall(json.decode, raw or "")
    if not ok or type(b) ~= "table" then return nil end
    local dir = fs.mkdtemp("watch")
    if not dir then return nil end
    local pbpath = fleet.materialize(b, dir)
    local pb = pbpath and playbook.load(pbpath, { sets = b.sets })
    fs.rmtree(dir)
    if not pb then return nil end
    local stages, triggers = {}, {}
    for i, st in ipairs(pb.stages) do stages[i] = { name = st.name, weight = st.weight, hold = st.hold } end
    for i, tr in ipairs(pb.triggers) do triggers[i] = { name = tr.name, ["for"] = tr.duration, condition = tr.condition and tr.condition.text } end
    return stages, triggers, { baseline = pb.versions.baseline.version, canary = pb.versions.canary.version }
  end
  function src.poll(self)
    local out = {}
    if self.first then
      self.first = false
      out.stages, out.triggers, self.versions = shape()
    else
      rollout.sleep(0.5)
    end
    local body = { key = codec.base64(K.event(id, self.seq + 1)), range_end = codec.base64(etcd.prefix_end(K.events(id))),
      sort_order = "ASCEND", sort_target = "KEY", limit = 500 }
    local v, rerr = c:call("/v3/kv/range", body)
    if not v then return nil, "etcd: " .. tostring(rerr) end
    out.events = {}
    for _, kv in ipairs(v.kvs or {}) do
      local key = codec.unbase64(kv.key)
      local ok, ev = pcall(json.decode, codec.unbase64(kv.value or ""))
      if ok and type(ev) == "table" then out.events[#out.events + 1] = ev end
      self.seq = tonumber(key:match("(%d+)$")) or self.seq
    end
    local st = fleet.status(c, K, id)
    if st then
      local summary = st.status or {}
      local vers = self.versions or {}
      out.status = { service = summary.service, state = summary.state, weights = summary.weights, stage = summary.stage,
        stage_index = summary.stage_index, baseline = vers.baseline, canary = vers.canary }
      if st.done and st.done.outcome then
        self.done = st.done
        if #out.events == 0 then -- every event up to the outcome is read: end with it
          out.status.outcome = { outcome = st.done.outcome, reason = st.done.reason, at = st.done.at }
        end
      end
    end
    return out
  end
  function src.after() return {} end
  function src.close() end
  return src
end

-- ---- drawing -------------------------------------------------------------------------------

--- color(out) -> whether to paint: a terminal, NO_COLOR unset (any value disables), TERM not dumb
function M.color(tty)
  if not tty then return false end
  local nc = os.getenv("NO_COLOR")
  if nc and nc ~= "" then return false end
  return os.getenv("TERM") ~= "dumb"
end

-- The terminal's width as every live view takes it (rollout.term: TIOCGWINSZ, $COLUMNS, 80).
local function term_width()
  return term.width(1)
end

--- run(source, {out = file, tty = bool, width = n}) -> outcome {outcome=, reason=, at=} | nil, err
function M.run(src, opts)
  opts = opts or {}
  local out = opts.out or io.stdout
  local tty = opts.tty
  if tty == nil then tty = fs.isatty ~= nil and fs.isatty(1) and os.getenv("TERM") ~= "dumb" end
  local color = M.color(tty)
  local width = opts.width or (tty and term_width() or 100)
  local view = watch_view.new()
  local last
  local function draw()
    if not tty then return end
    local lines = view:frame({ width = math.max(40, width - 1), color = color })
    local buf = { "\27[H" }
    for _, l in ipairs(lines) do buf[#buf + 1] = l .. "\27[K\n" end
    buf[#buf + 1] = "\27[J"
    out:write(table.concat(buf))
    out:flush()
  end
  local function feed(events)
    for _, ev in ipairs(events) do
      view:feed(ev)
      last = { event = ev.event, t = ev.t }
      if not tty then
        local l = view:line(ev)
        if l then out:write(l, "\n") end
      end
    end
    if not tty then out:flush() end
  end
  if tty then out:write("\27[2J\27[H") end
  local started = false
  while true do
    local r, err = src:poll()
    if not r then
      if tostring(err):match("^closed") then
        feed(src:after(last)) -- the rollout ended and closed its socket: the journal has the rest
        draw()
        if view.outcome then break end
        src:close()
        return nil, "the rollout's control socket closed before it ended (" .. tostring(err) .. ")"
      end
      src:close()
      return nil, err
    end
    view:learn(r.stages, r.triggers)
    if not tty and not started then
      started = true
      local st = r.status or {}
      out:write(string.format("watching %s %s -> %s: %s%s\n", tostring(st.service or "?"), tostring(st.baseline or "?"),
        tostring(st.canary or "?"), tostring(st.state or "?"), st.stage and (", stage " .. st.stage) or ""))
    end
    feed(r.events or {})
    view:status(r.status)
    draw()
    if view.outcome then break end
  end
  src:close()
  if not tty then out:write(watch_view.outcome_line(view.outcome), "\n"); out:flush() end
  return view.outcome
end

M.journal = journal -- (for specs: the journal module the socket source reads)
return M
