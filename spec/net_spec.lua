-- net_spec.lua: rollout.net over real Unix and TCP sockets, servers written in Lua, and a
-- real HAProxy runtime API on loopback.
local rollout = require("rollout")
local fs = require("rollout.fs")
local net = require("rollout.net")
local proc = require("rollout.proc")

-- A server task answering each line with "echo:<line>" until the peer closes.
local function echo_server(srv, count)
  return rollout.spawn(function()
    for _ = 1, count or 1 do
      local c = assert(srv:accept(5))
      while true do
        local line, err = c:receive("l", 5)
        if not line then assert(err == "closed", err); break end
        assert(c:send("echo:" .. line .. "\n"))
      end
      c:close()
    end
    return true
  end)
end

-- A server task that writes `chunks` with a pause between them, then closes.
local function trickle_server(srv, chunks, pause)
  return rollout.spawn(function()
    local c = assert(srv:accept(5))
    for _, s in ipairs(chunks) do
      assert(c:send(s))
      rollout.sleep(pause or 0.02)
    end
    c:close()
  end)
end

local function free_port()
  local s = assert(net.listen_tcp("127.0.0.1", 0))
  local p = s:port()
  s:close()
  return p
end

describe("net", function()
  local dir
  before_each(function() dir = assert(fs.mkdtemp("net-spec")) end)
  after_each(function() fs.rmtree(dir) end)

  it("echoes lines over a unix socket with the requested mode", function()
    local path = dir .. "/echo.sock"
    local srv = assert(net.listen_unix(path, "0600"))
    finally(function() srv:close() end)
    local st = fs.stat(path)
    assert.equals("socket", st.type)
    assert.equals(384, st.mode) -- 0600
    assert.equals(path, srv:path())
    assert.is_nil(srv:port())
    local server = echo_server(srv)
    local c = assert(net.connect_unix(path, 2))
    assert.is_true(c:send("one\ntwo\n"))
    assert.equals("echo:one", c:receive("l"))
    assert.equals("echo:two", c:receive("*l"))
    assert.is_true(c:send("three\n"))
    assert.equals("echo:three\n", c:receive("L"))
    c:close()
    assert.is_true(server:wait(5))
    srv:close()
    assert.is_nil(fs.stat(path), "close removes the socket file")
  end)

  it("echoes lines over tcp on an ephemeral port", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local port = srv:port()
    assert.is_true(port > 0)
    local server = echo_server(srv, 2)
    for _, host in ipairs({ "127.0.0.1", "localhost" }) do
      local c = assert(net.connect_tcp(host, port, 2))
      assert(c:send("hi " .. host .. "\r\n"))
      assert.equals("echo:hi " .. host, c:receive("l"))
      assert.is_nil(c:peer_uid())
      assert.is_number(c:fd())
      c:close()
      assert.is_nil(c:fd())
    end
    assert.is_true(server:wait(5))
  end)

  it("resolves host names off the loop", function()
    local name = assert(proc.run{ argv = { "hostname" } }).stdout:match("^%S+")
    local known = assert(proc.run{ argv = { "getent", "ahostsv4", name } }).code == 0
    if not known then return print("        (skipped: " .. tostring(name) .. " does not resolve)") end
    local srv = assert(net.listen_tcp("*", 0))
    finally(function() srv:close() end)
    local server = echo_server(srv)
    local c = assert(net.connect_tcp(name, srv:port(), 5))
    assert(c:send("x\n"))
    assert.equals("echo:x", c:receive("l"))
    c:close()
    server:wait(5)
    local none, err = net.connect_tcp("no-such-host.invalid", 80, 5)
    assert.is_nil(none)
    assert.matches("^connect no%-such%-host%.invalid:80: ", err)
  end)

  it("reassembles lines, byte counts and delimiters from partial reads", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local server = trickle_server(srv, { "hel", "lo\r", "\nwor", "ld\n\nnext", " part\n", "\nta", "il" })
    local c = assert(net.connect_tcp("127.0.0.1", srv:port()))
    assert.equals("hello", c:receive("l"))
    assert.equals("wor", c:receive(3))
    assert.equals("ld", c:receive_until("\n\n"))
    assert.equals("next part", c:receive_until("\n\n"))
    assert.equals("", c:receive(0))
    assert.equals("tail", c:receive("a"))
    assert.equals("", c:receive("a"), "at EOF, 'a' returns an empty string")
    local none, err, partial = c:receive("l")
    assert.is_nil(none)
    assert.equals("closed", err)
    assert.equals("", partial)
    server:wait(5)
  end)

  it("returns the partial data when the peer closes early", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local server = trickle_server(srv, { "abc" })
    local c = assert(net.connect_tcp("127.0.0.1", srv:port()))
    assert.same({ nil, "closed", "abc" }, { c:receive(10) })
    server:wait(5)
  end)

  it("times out receive and accept", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local t0 = rollout.now()
    assert.same({ nil, "timeout" }, { srv:accept(0.1) })
    assert.ge(rollout.now() - t0, 0.1)
    assert.lt(rollout.now() - t0, 1)
    local held
    local server = rollout.spawn(function()
      held = assert(srv:accept(5))
      assert(held:send("no newline"))
    end)
    local c = assert(net.connect_tcp("127.0.0.1", srv:port()))
    server:wait(5)
    t0 = rollout.now()
    assert.same({ nil, "timeout", "no newline" }, { c:receive("l", "150ms") })
    assert.ge(rollout.now() - t0, 0.15)
    assert.lt(rollout.now() - t0, 1)
    assert(held:send("more\n"))
    assert.equals("more", c:receive("l", 2), "the conn works after a timeout")
    held:close()
  end)

  it("names the target when a connect fails", function()
    local none, err = net.connect_unix(dir .. "/missing.sock")
    assert.is_nil(none)
    assert.equals("connect " .. dir .. "/missing.sock: No such file or directory", err)
    local port = free_port()
    none, err = net.connect_tcp("127.0.0.1", port)
    assert.is_nil(none)
    assert.equals("connect 127.0.0.1:" .. port .. ": Connection refused", err)
    none, err = net.connect_unix(string.rep("x", 200))
    assert.is_nil(none)
    assert.matches("path too long", err)
    assert.has_error(function() net.connect_tcp("127.0.0.1", 70000) end, "port out of range")
  end)

  it("reports the peer's credentials on unix sockets", function()
    local path = dir .. "/cred.sock"
    local srv = assert(net.listen_unix(path))
    finally(function() srv:close() end)
    local accepted
    local t = rollout.spawn(function() accepted = assert(srv:accept(5)) end)
    local c = assert(net.connect_unix(path))
    t:wait(5)
    local uid, gid, pid = accepted:peer_uid()
    assert.equals(fs.getuid(), uid)
    assert.is_number(gid)
    assert.equals(fs.getpid(), pid)
    -- and a peer that is another process
    local py = [[
import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"hi\n"); time.sleep(0.3)
]]
    local runner = rollout.spawn(function()
      return proc.run{ argv = { "/usr/bin/python3", "-c", py, path }, timeout = 10 }
    end)
    local other = assert(srv:accept(5))
    assert.equals("hi", other:receive("l", 5))
    local _, _, opid = other:peer_uid()
    assert.equals(runner:wait().pid, opid)
    c:close()
  end)

  it("replaces a stale socket file but refuses a live one or a non-socket", function()
    local path = dir .. "/stale.sock"
    local r = assert(proc.run{ argv = { "/usr/bin/python3", "-c",
      "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)", path } })
    assert.equals(0, r.code, r.stderr)
    assert.equals("socket", fs.stat(path).type)
    local srv = assert(net.listen_unix(path, 384))
    local again, err = net.listen_unix(path)
    assert.is_nil(again)
    assert.equals("listen " .. path .. ": a server is already listening there", err)
    srv:close()
    assert(fs.write_atomic(dir .. "/file", "x"))
    again, err = net.listen_unix(dir .. "/file")
    assert.is_nil(again)
    assert.matches("exists and is not a socket", err)
    assert.has_error(function() net.listen_unix(path, "rw") end, "octal")
  end)

  it("wakes a waiting reader and acceptor with 'closed' on close", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    local port = srv:port()
    local acceptor = rollout.spawn(function() return srv:accept() end)
    rollout.sleep(0.05)
    srv:close()
    assert.same({ nil, "closed" }, { acceptor:wait(2) })
    assert.is_nil(net.connect_tcp("127.0.0.1", port))

    local srv2 = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv2:close() end)
    local peer
    local t = rollout.spawn(function() peer = assert(srv2:accept(5)) end)
    local c = assert(net.connect_tcp("127.0.0.1", srv2:port()))
    t:wait(5)
    local reader = rollout.spawn(function() return c:receive("l") end)
    rollout.sleep(0.05)
    assert.has_error(function() c:receive("l") end, "another task is receiving")
    c:close()
    assert.same({ nil, "closed" }, { reader:wait(2) })
    assert.same({ nil, "closed", 0 }, { c:send("x") })
    assert.same({ "", nil }, { peer:receive("a", 2) })
  end)

  it("moves megabytes both ways (send waits for the peer to read)", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local blob = {}
    for i = 1, 4096 do blob[i] = string.format("%07d", i) .. string.rep("z", 1017) end
    blob = table.concat(blob)
    local server = rollout.spawn(function()
      local c = assert(srv:accept(5))
      local got = assert(c:receive(#blob, 10))
      assert(c:send(got, 10))
      assert(c:shutdown())
      assert.equals("", c:receive("a", 5))
      c:close()
      return #got
    end)
    local c = assert(net.connect_tcp("127.0.0.1", srv:port()))
    local echoed = rollout.spawn(function() return c:receive("a", 10) end) -- a reader beside the writer
    assert.is_true(c:send(blob, 10))
    local back = echoed:wait(10)
    c:close()
    assert.equals(#blob, server:wait(10))
    assert.is_true(back == blob, "the echo differs")
  end)

  it("closes a collected conn", function()
    local srv = assert(net.listen_tcp("127.0.0.1", 0))
    finally(function() srv:close() end)
    local peer
    local t = rollout.spawn(function() peer = assert(srv:accept(5)) end)
    do
      local c = assert(net.connect_tcp("127.0.0.1", srv:port()))
      t:wait(5)
      c:send("bye")
    end
    collectgarbage()
    collectgarbage()
    assert.equals("bye", peer:receive("a", 2))
  end)
end)

describe("net against HAProxy's runtime API", function()
  local dir, haproxy
  before_each(function() dir = assert(fs.mkdtemp("net-haproxy")) end)
  after_each(function()
    if haproxy and haproxy:running() then haproxy:kill("TERM"); haproxy:wait(5) end
    fs.rmtree(dir)
  end)

  -- One command per connection; the reply ends with an empty line, or (an empty reply is a
  -- lone "\n") with HAProxy closing the connection.
  local function cli(sock, line)
    local c = assert(net.connect_unix(sock, 2))
    assert(c:send(line .. "\n"))
    local reply, err, partial = c:receive_until("\n\n", 5)
    c:close()
    if not reply and err == "closed" then reply = partial end
    return (assert(reply, err):gsub("\n+$", ""))
  end

  it("sets and reads back a server weight", function()
    local sock = dir .. "/haproxy.sock"
    local cfg = string.format([[
global
    stats socket %s mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client  30s
    timeout server  30s
frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    balance roundrobin
    server baseline 127.0.0.1:%d weight 100
    server canary   127.0.0.1:%d weight 0
]], sock, free_port(), free_port(), free_port())
    assert(fs.write_atomic(dir .. "/haproxy.cfg", cfg))
    haproxy = assert(proc.spawn{ argv = { "haproxy", "-db", "-f", dir .. "/haproxy.cfg" },
                                 stdout = dir .. "/log", stderr = dir .. "/log" })
    local deadline = rollout.now() + 10
    while not net.connect_unix(sock) do
      assert(haproxy:running(), "haproxy exited: " .. tostring(fs.read(dir .. "/log")))
      assert(rollout.now() < deadline, "no stats socket after 10 s")
      rollout.sleep(0.02)
    end
    assert.equals("0 (initial 0)", cli(sock, "get weight be/canary"))
    assert.equals("", cli(sock, "set weight be/canary 25"))
    assert.equals("25 (initial 0)", cli(sock, "get weight be/canary"))
    assert.equals("No such server.", cli(sock, "get weight be/nope"))
    -- the whole reply, read until HAProxy closes
    local c = assert(net.connect_unix(sock))
    assert(c:send("get weight be/baseline\n"))
    assert.equals("100 (initial 100)\n\n", c:receive("a", 5))
    c:close()
    assert.is_true(haproxy:kill("TERM"))
    local code, sig = haproxy:wait(5)
    assert.is_true(code == 0 or sig == "TERM", "haproxy stopped with " .. tostring(code) .. " " .. tostring(sig))
    assert.is_false(haproxy:running())
  end)
end)
