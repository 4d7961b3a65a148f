/* codec.c: the `codec` namespace.
 *   codec.base64(s) -> text            codec.unbase64(text) -> s | nil, err
 *   codec.hex(s) -> text
 * Error policy: wrong argument types raise; malformed base64 returns nil, err. */
#include "rollout/codec.h"

#include <lauxlib.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t codec_base64_len(size_t n) { return (n + 2) / 3 * 4; }

void codec_base64_encode(const unsigned char *in, size_t n, char *out) {
    size_t i = 0, o = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = B64[v >> 6 & 63];
        out[o++] = B64[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
}

static int b64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

size_t codec_base64_decode(const char *in, size_t n, unsigned char *out) {
    while (n && in[n - 1] == '=') n--;
    if (n % 4 == 1) return (size_t)-1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(in[i]);
        if (v < 0) return (size_t)-1;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    return o;
}

/* codec.base64(s) -> text  [-0, +1, e] */
static int l_codec_base64(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, codec_base64_len(n) + 1);
    codec_base64_encode((const unsigned char *)s, n, out);
    luaL_pushresultsize(&b, codec_base64_len(n));
    return 1;
}

/* codec.unbase64(text) -> s | nil, err  [-0, +1|2, e] */
static int l_codec_unbase64(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, n / 4 * 3 + 3);
    size_t len = codec_base64_decode(s, n, out);
    if (len == (size_t)-1) {
        luaL_pushresultsize(&b, 0);
        lua_pushnil(L);
        lua_pushliteral(L, "malformed base64");
        return 2;
    }
    luaL_pushresultsize(&b, len);
    return 1;
}

/* codec.hex(s) -> text  [-0, +1, e] */
static int l_codec_hex(lua_State *L) {
    size_t n;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, 2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = "0123456789abcdef"[s[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[s[i] & 15];
    }
    luaL_pushresultsize(&b, 2 * n);
    return 1;
}

/* require "rollout.codec" -> module  [-0, +1, m] */
int luaopen_rollout_codec(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"base64", l_codec_base64}, {"unbase64", l_codec_unbase64}, {"hex", l_codec_hex}, {NULL, NULL}};
    luaL_newlib(L, funcs);
    return 1;
}
