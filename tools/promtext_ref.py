#!/usr/bin/python3
"""Reference for spec/promtext_spec.lua and bench/promtext_bench.lua: Debian's
python3-prometheus-client (prometheus_client.parser) on the same bytes.

    promtext_ref.py dump FILE    print the parse as a Lua chunk: return {families = {...}}
    promtext_ref.py bench FILE [SECONDS]
                                 print "mb_per_s=<x> samples=<n> families=<n>" for
                                 text_string_to_metric_families over FILE, repeated for at
                                 least SECONDS (default 2) of this process's CPU time

Run it with /usr/bin/python3 (Debian's interpreter, where the package is installed).
The dump is what the client yields, unchanged: it renames counters to the OpenMetrics
convention (family "x" for "x_total") and makes every sample whose family was not declared
a family of its own; the spec applies the same conventions to rollout's parse before
comparing. Values are written as exact hexadecimal floats, so the comparison is bit-exact.
"""
import sys
import time

from prometheus_client.parser import text_string_to_metric_families


def lua_string(s):
    out = ['"']
    for b in s.encode('utf-8'):
        c = chr(b)
        if c in '"\\':
            out.append('\\' + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append('\\%03d' % b)
    out.append('"')
    return ''.join(out)


def lua_number(x):
    if x != x:
        return '(0/0)'
    if x == float('inf'):
        return '(1/0)'
    if x == float('-inf'):
        return '(-1/0)'
    return x.hex()


def dump(text):
    out = ['return {families = {']
    nsamples = 0
    for fam in text_string_to_metric_families(text):
        out.append('{name=%s, type=%s, help=%s, samples={' % (
            lua_string(fam.name), lua_string(fam.type), lua_string(fam.documentation)))
        for s in fam.samples:
            labels = ', '.join('[%s]=%s' % (lua_string(k), lua_string(v)) for k, v in sorted(s.labels.items()))
            ts = '' if s.timestamp is None else ', timestamp=%d' % round(float(s.timestamp) * 1000)
            out.append('{name=%s, labels={%s}, value=%s%s},' % (lua_string(s.name), labels, lua_number(s.value), ts))
            nsamples += 1
        out.append('}},')
    out.append('}, nsamples=%d}' % nsamples)
    return '\n'.join(out)


def bench(text, seconds):
    size = len(text.encode('utf-8'))
    runs, t0 = 0, time.process_time()
    while True:
        nfam = nsamp = 0
        for fam in text_string_to_metric_families(text):
            nfam += 1
            nsamp += len(fam.samples)
        runs += 1
        elapsed = time.process_time() - t0
        if elapsed >= seconds:
            break
    print('mb_per_s=%.3f samples=%d families=%d' % (size * runs / elapsed / 1e6, nsamp, nfam))


def main(argv):
    if len(argv) < 3 or argv[1] not in ('dump', 'bench'):
        sys.stderr.write(__doc__)
        return 2
    with open(argv[2], 'rb') as f:
        text = f.read().decode('utf-8')
    if argv[1] == 'dump':
        sys.stdout.write(dump(text) + '\n')
    else:
        bench(text, float(argv[3]) if len(argv) > 3 else 2.0)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
