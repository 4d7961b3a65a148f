/* codec.h: the `codec` namespace: base64 (etcd's JSON gateway carries keys and values in
 * it) and hex. Pure functions over bytes. */
#ifndef ROLLOUT_CODEC_H
#define ROLLOUT_CODEC_H

#include <stddef.h>

#include <lua.h>

/* Encoded length of n bytes, without a terminator. */
size_t codec_base64_len(size_t n);
/* Writes codec_base64_len(n) bytes to out. */
void codec_base64_encode(const unsigned char *in, size_t n, char *out);
/* Decodes standard base64 (padding optional, no whitespace); returns the decoded length,
 * or (size_t)-1 on a malformed input. out needs room for n / 4 * 3 + 3 bytes. */
size_t codec_base64_decode(const char *in, size_t n, unsigned char *out);

int luaopen_rollout_codec(lua_State *L);

#endif
