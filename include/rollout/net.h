/* net.h: the `net` namespace: non-blocking Unix and TCP stream sockets on the loop, with
 * buffered reading, for the HAProxy runtime API, the control socket and tiny servers in specs.
 * The Lua API and its error policy are described at the top of src/net.c. */
#ifndef ROLLOUT_NET_H
#define ROLLOUT_NET_H

#include <lua.h>

int luaopen_rollout_net(lua_State *L);

#endif
