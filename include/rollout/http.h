/* http.h: the `http` namespace. HTTP/HTTPS requests from tasks over libcurl's multi-socket
 * interface, driven by the one libev loop: a request parks its task and never blocks the
 * loop; thousands may be in flight at once. See src/http.c for the Lua API.
 *
 * Error policy: wrong argument types and unknown options raise; transport failures (refused,
 * timed out, unresolvable, TLS, body too large) return nil, err. An HTTP error status is a
 * response, not an error. */
#ifndef ROLLOUT_HTTP_H
#define ROLLOUT_HTTP_H

#include <lua.h>

int luaopen_rollout_http(lua_State *L);

#endif
