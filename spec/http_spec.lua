-- http: requests from tasks over curl-multi + libev, against real servers on loopback
-- (NGINX, and spec/support/http_server.py for slow, echo and header routes).
local rollout = require("rollout")
local fs = require("rollout.fs")
local http = require("rollout.http")
local servers = require("spec.support.servers")

local function spawn_all(n, fn)
  local tasks = {}
  for i = 1, n do tasks[i] = rollout.spawn(fn, i) end
  return assert(rollout.wait_all(tasks))
end

describe("http", function()
  local py, ng

  setup(function()
    py = assert(servers.python_http())
    ng = assert(servers.nginx{
      files = { ["index.html"] = "hello\n", ["small.txt"] = "0123456789" },
      server = [[
        location = /nginx_status { stub_status; }
        location = /unavailable { return 503 "down\n"; }
]],
      http = [[
    server { listen unix:{dir}/nginx.sock; root {dir}/www; }
]],
    })
  end)
  teardown(function() servers.stop_all() end)

  describe("concurrency", function()
    it("runs 200 requests that each take 200 ms at once", function()
      local t0 = rollout.now()
      local results = spawn_all(200, function()
        local res, err = http.get(py.url .. "/delay?ms=200")
        return res and res.status or err
      end)
      local dt = rollout.now() - t0
      for i, r in ipairs(results) do assert.equals(200, r[1], "request " .. i) end
      assert.ge(dt, 0.2, "the server sleeps 200 ms")
      assert.lt(dt, 5, "200 x 200 ms in sequence would take 40 s")
    end)

    it("keeps the loop serving timers while a request is in flight", function()
      local ticks = 0
      local ticker = rollout.every(0.05, function() ticks = ticks + 1 end)
      local res = assert(http.get(py.url .. "/delay?ms=600"))
      ticker:cancel()
      assert.equals(200, res.status)
      assert.ge(res.time, 0.6)
      assert.ge(ticks, 8, "a 50 ms ticker during a 600 ms request")
    end)

    it("completes 1000 requests in flight at once", function()
      local results = spawn_all(1000, function(i)
        local res, err = http.get(ng.url .. "/small.txt?i=" .. i)
        return res and res.status, res and res.body or err
      end)
      for i, r in ipairs(results) do
        assert.equals(200, r[1], "request " .. i .. ": " .. tostring(r[2]))
        assert.equals("0123456789", r[2])
      end
      assert.equals(0, http.stats().active)
      assert.le(http.stats().pooled, 256)
    end)

    it("reuses connections (NGINX counts the accepts)", function()
      local function accepts()
        local res = assert(http.get(ng.url .. "/nginx_status"))
        return tonumber(res.body:match("\n%s*(%d+)%s+%d+%s+%d+"))
      end
      local before = accepts()
      for _ = 1, 30 do assert.equals(200, assert(http.get(ng.url .. "/")).status) end
      local after = accepts()
      assert.le(after - before, 1, "30 sequential requests over one kept-alive connection")
    end)
  end)

  describe("failures", function()
    it("reports a refused connection with its URL", function()
      local url = "http://127.0.0.1:" .. servers.free_port() .. "/"
      local res, err = http.get(url)
      assert.is_nil(res)
      assert.equals("connection refused (" .. url .. ")", err)
      res, err = http.get((url:gsub("//", "//user:s3cret@")))
      assert.is_nil(res)
      assert.equals("connection refused (" .. url .. ")", err, "credentials stay out of errors")
    end)

    it("times out after the request's timeout", function()
      local t0 = rollout.now()
      local res, err = http.get(py.url .. "/delay?ms=3000", { timeout = 0.5 })
      local dt = rollout.now() - t0
      assert.is_nil(res)
      assert.equals("timed out after 0.5 s", err)
      assert.near(0.5, dt, 0.3)
      res, err = http.get(py.url .. "/delay?ms=3000", { timeout = "250ms" })
      assert.is_nil(res)
      assert.equals("timed out after 0.25 s", err)
    end)

    it("names a host it cannot resolve", function()
      local res, err = http.get("http://nonexistent.invalid/x")
      assert.is_nil(res)
      assert.equals("could not resolve host 'nonexistent.invalid'", err)
    end)

    it("returns HTTP error statuses as responses", function()
      local res = assert(http.get(py.url .. "/status/404"))
      assert.equals(404, res.status)
      assert.equals("status 404\n", res.body)
      res = assert(http.get(py.url .. "/status/503"))
      assert.equals(503, res.status)
      res = assert(http.get(ng.url .. "/unavailable"))
      assert.equals(503, res.status)
      assert.equals("down\n", res.body)
      res = assert(http.get(ng.url .. "/missing.html"))
      assert.equals(404, res.status)
    end)

    it("caps the response body", function()
      local res = assert(http.get(py.url .. "/bytes?n=1000", { max_body = 1000 }))
      assert.equals(1000, #res.body)
      local err
      res, err = http.get(py.url .. "/bytes?n=1001", { max_body = 1000 })
      assert.is_nil(res)
      assert.matches("^response body larger than 1000 bytes", err)
      res = assert(http.get(py.url .. "/bytes?n=3000000"))
      assert.equals(3000000, #res.body)
    end)

    it("rejects what is not an HTTP(S) URL", function()
      local res, err = http.get("file:///etc/passwd")
      assert.is_nil(res)
      assert.matches("^invalid URL 'file:///etc/passwd'", err)
    end)
  end)

  describe("requests and responses", function()
    it("echoes a POST body, binary-safe", function()
      local body = "a\0b" .. string.rep("x", 100000)
      local res = assert(http.post(py.url .. "/echo", body, { headers = { ["Content-Type"] = "application/x-test" } }))
      assert.equals(200, res.status)
      assert.equals(body, res.body)
      assert.equals("application/x-test", res.headers["content-type"])
      assert.equals("POST", res.headers["x-method"])
      res = assert(http.post(py.url .. "/echo", "{}"))
      assert.equals("application/octet-stream", res.headers["content-type"], "no invented Content-Type")
      res = assert(http.request{ method = "PUT", url = py.url .. "/echo", body = "put me" })
      assert.equals("PUT", res.headers["x-method"])
      assert.equals("put me", res.body)
      res = assert(http.request{ url = py.url .. "/echo", body = "implied" })
      assert.equals("POST", res.headers["x-method"])
      res = assert(http.request{ method = "DELETE", url = py.url .. "/echo" })
      assert.equals("DELETE", res.headers["x-method"])
      assert.equals("", res.body)
      res = assert(http.request{ method = "HEAD", url = ng.url .. "/small.txt" })
      assert.equals(200, res.status)
      assert.equals("", res.body)
      assert.equals("10", res.headers["content-length"])
    end)

    it("round-trips headers: lower-cased names, repeats joined", function()
      local res = assert(http.get(py.url .. "/headers", {
        headers = { ["X-Test-Foo"] = "bar baz", ["X-Test-Num"] = 42, ["X-Test-Empty"] = "" },
      }))
      assert.equals("bar baz", res.headers["x-echo-foo"])
      assert.equals("42", res.headers["x-echo-num"])
      assert.equals("", res.headers["x-echo-empty"])
      assert.equals("a, b", res.headers["x-multi"])
      assert.matches("\nx%-test%-foo: bar baz\n", res.body)
      for name in pairs(res.headers) do assert.equals(name:lower(), name) end
      assert.is_number(res.time)
    end)

    it("sends bearer tokens and basic auth", function()
      local res = assert(http.get(py.url .. "/headers", { bearer = "t0k3n" }))
      assert.matches("\nauthorization: Bearer t0k3n\n", res.body)
      res = assert(http.get(py.url .. "/headers", { auth = "u:p" }))
      assert.matches("\nauthorization: Basic dTpw\n", res.body)
      res = assert(http.get(py.url .. "/headers", { auth = { user = "u", password = "p" } }))
      assert.matches("\nauthorization: Basic dTpw\n", res.body)
      res = assert(http.get(py.url .. "/headers")) -- a pooled handle forgets the last request's auth
      assert.is_nil(res.body:find("authorization", 1, true))
    end)

    it("follows redirects only when asked", function()
      local res = assert(http.get(py.url .. "/redirect?to=/health"))
      assert.equals(302, res.status)
      assert.equals("/health", res.headers.location)
      res = assert(http.get(py.url .. "/redirect?to=/health", { follow = true }))
      assert.equals(200, res.status)
      assert.equals("ok", res.body)
      assert.is_nil(res.headers.location)
      local err
      res, err = http.get(py.url .. "/loop", { follow = true, max_redirects = 3 })
      assert.is_nil(res)
      assert.matches("^too many redirects", err)
    end)

    it("speaks HTTP over a Unix socket", function()
      local sock = ng.dir .. "/nginx.sock"
      local res = assert(http.get("http://localhost/small.txt", { unix_socket = sock }))
      assert.equals("0123456789", res.body)
      res = assert(http.request{ url = "/index.html", unix_socket = sock })
      assert.equals("hello\n", res.body)
      local err
      res, err = http.get("/x", { unix_socket = ng.dir .. "/no.sock" })
      assert.is_nil(res)
      assert.is_string(err)
    end)
  end)

  describe("TLS", function()
    local tls, dir, cert
    setup(function()
      dir = assert(fs.mkdtemp("http-tls"))
      local key
      cert, key = servers.tls_cert(dir)
      tls = assert(servers.nginx{ tls = { cert = cert, key = key } })
    end)
    teardown(function()
      if tls then tls:stop() end
      fs.rmtree(dir)
    end)

    it("verifies certificates by default", function()
      local res, err = http.get(tls.url .. "/")
      assert.is_nil(res)
      assert.matches("^TLS: ", err)
    end)
    it("trusts a CA file, or anything when insecure", function()
      local res = assert(http.get(tls.url .. "/", { cafile = cert }))
      assert.equals("hello\n", res.body)
      res = assert(http.get(tls.url .. "/", { insecure = true }))
      assert.equals(200, res.status)
      local err
      res, err = http.get(tls.url .. "/") -- the pooled handle verifies again
      assert.is_nil(res)
      assert.matches("^TLS: ", err)
    end)
  end)

  describe("cancellation", function()
    it("releases a cancelled request's handle, and later requests still work", function()
      local r, why = rollout.with_timeout(0.2, http.get, py.url .. "/delay?ms=3000")
      assert.is_nil(r)
      assert.equals("timeout", why)
      assert.equals(0, http.stats().active)
      local tasks = {}
      for i = 1, 20 do tasks[i] = rollout.spawn(http.get, py.url .. "/delay?ms=2000") end
      rollout.sleep(0.1)
      assert.equals(20, http.stats().active)
      for _, t in ipairs(tasks) do t:cancel() end
      assert.equals(0, http.stats().active)
      local results = spawn_all(50, function()
        local res, err = http.get(py.url .. "/health")
        return res and res.status or err
      end)
      for i, x in ipairs(results) do assert.equals(200, x[1], "request " .. i) end
      assert.equals(0, http.stats().active)
    end)
  end)

  describe("arguments", function()
    it("raises on unknown options and bad values, naming them", function()
      assert.has_error(function() http.get(ng.url, { folow = true }) end, "option 'folow' is unknown")
      assert.has_error(function() http.request{ url = ng.url, timeout = "soon" } end, "option 'timeout'")
      assert.has_error(function() http.request{ method = "GET" } end, "a url is required")
      assert.has_error(function() http.get(ng.url, { headers = { ["X-A"] = "a\r\nX-B: b" } }) end, "CR/LF")
      assert.has_error(function() http.get(ng.url, { url = "x" }) end, "option 'url'")
      assert.has_error(function() http.configure{ max_conections = 1 } end, "unknown setting 'max_conections'")
    end)
    it("must run in a task", function()
      local co = coroutine.wrap(function() return pcall(http.get, ng.url) end)
      local ok, err = co()
      assert.is_false(ok)
      assert.matches("must be called from a task", err)
    end)
    it("limits connections when configured", function()
      -- a fresh server: curl's limit stops new connections, and kept-alive ones to py exist
      local fresh <close> = assert(servers.python_http())
      local saved = http.configure()
      http.configure{ max_host_connections = 5 }
      local t0 = rollout.now()
      local results = spawn_all(10, function()
        return assert(http.get(fresh.url .. "/delay?ms=200")).status
      end)
      local dt = rollout.now() - t0
      http.configure{ max_host_connections = saved.max_host_connections }
      for _, r in ipairs(results) do assert.equals(200, r[1]) end
      assert.ge(dt, 0.4, "10 requests, 5 at a time, 200 ms each")
    end)
  end)

  describe("URL helpers", function()
    it("percent-encodes and decodes", function()
      assert.equals("a%20b%2Fc~d_e.f-g%26%3D%C3%A9", http.urlencode("a b/c~d_e.f-g&=é"))
      assert.equals("a b/c&=é", http.urldecode("a+b%2Fc%26%3d%C3%A9"))
      assert.equals("100%", http.urldecode("100%"))
      assert.equals("%zz", http.urldecode("%zz"))
    end)
    it("encodes query strings with sorted keys and repeated lists", function()
      assert.equals("a=1", http.encode_query{ a = 1 })
      assert.equals("a=1&b=x%20y&c=true&f=1&f=2", http.encode_query{ f = { 1, 2 }, b = "x y", a = 1, c = true })
      assert.equals("", http.encode_query{})
      assert.equals("filter=severity%3D%22critical%22",
        http.encode_query{ filter = 'severity="critical"' })
    end)
  end)
end)
