#!/bin/sh
# tools/fresh_root.sh: prove the README's two commands on a truly fresh Debian 12.
#
#   tools/fresh_root.sh [--base DIR] [--ref REF] WORKDIR [REPO]
#
# 1. `debootstrap --variant=minbase bookworm WORKDIR/root` from the Debian mirror apt is
#    configured with (or, with --base DIR, a copy of a minbase root made that way earlier);
# 2. inside it, installs only `make git ca-certificates`;
# 3. clones REPO (default: this repository; REF default: its HEAD) from a bare clone
#    bind-mounted in, to /build/rollout, with nothing beside it;
# 4. runs `make demo`, then `make test`, each in ONE invocation, as root, in a chroot inside
#    its own mount namespace (`unshare -m`; the root bind-mounted on itself, proc, sysfs and
#    /dev mounted), with a clean environment;
# 5. prints a pass/fail summary. Logs: WORKDIR/logs/{setup,demo,test}.log.
# Needs root, debootstrap and unshare. Exit status 0 when both commands pass and no test
# skipped, 1 otherwise, 2 on a setup failure. WORKDIR/root is removed first if it exists.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
base= ref=HEAD
while [ $# -gt 0 ]; do
  case $1 in
    --base) base=$2; shift 2 ;;
    --ref) ref=$2; shift 2 ;;
    -*) echo "fresh_root.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
work=$1 repo=${2:-$here}
[ "$(id -u)" = 0 ] || { echo "fresh_root.sh: must run as root" >&2; exit 2; }

# The Debian mirror apt uses here (deb822 "URIs:" or a one-line "deb URL bookworm ...").
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
  awk '/^URIs:/ && $2 ~ /\/debian\/?$/ { print $2; exit } /^deb / && $0 ~ / bookworm / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }')
mirror=${mirror:-http://deb.debian.org/debian}

mkdir -p "$work/logs"
work=$(cd "$work" && pwd)
root=$work/root logs=$work/logs
rm -rf "$root" "$work/repo.git"
log() { echo "fresh_root: $*" | tee -a "$logs/setup.log"; }
: > "$logs/setup.log"

if [ -n "$base" ]; then
  log "copying the minbase root from $base"
  cp -a "$base" "$root"
else
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >> "$logs/setup.log" 2>&1 ||
    { log "debootstrap failed (see $logs/setup.log)"; exit 2; }
fi
# the minbase root: name resolution for apt and localhost, nothing else from this machine
cp /etc/resolv.conf "$root/etc/resolv.conf"
# /etc/hosts as Debian's installer writes it: localhost, and the host's name on 127.0.1.1
# (the chroot shares this machine's host name)
printf '127.0.0.1 localhost\n127.0.1.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$(hostname)" > "$root/etc/hosts"

log "bare clone of $repo at $ref"
git clone -q --bare "$repo" "$work/repo.git"
commit=$(git -C "$repo" rev-parse "$ref")
git -C "$work/repo.git" update-ref refs/heads/fresh-root "$commit"
git -C "$work/repo.git" symbolic-ref HEAD refs/heads/fresh-root
mkdir -p "$root/src/repo.git" "$root/logs"

# Runs inside the chroot: a clean environment, root's home, Debian's PATH.
cat > "$root/run.sh" <<'EOF'
#!/bin/sh
set -u
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -q && apt-get install -y -q --no-install-recommends make git ca-certificates; } > /logs/setup-chroot.log 2>&1 ||
  { echo "apt-get install make git ca-certificates failed"; exit 2; }
mkdir -p /build && cd /build && git clone -q /src/repo.git rollout >> /logs/setup-chroot.log 2>&1 || exit 2
cd /build/rollout
echo "clone: $(git log --oneline -1)"
start=$(date +%s); make demo > /logs/demo.log 2>&1; demo=$?; echo "make demo: exit $demo in $(( $(date +%s) - start )) s"
start=$(date +%s); make test > /logs/test.log 2>&1; test=$?; echo "make test: exit $test in $(( $(date +%s) - start )) s"
[ "$demo" = 0 ] && [ "$test" = 0 ]
EOF
chmod +x "$root/run.sh"

log "running make demo and make test in the chroot (logs in $logs)"
set +e
unshare -m --propagation private sh -c '
  set -e
  root=$1 work=$2 logs=$3
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --bind "$work/repo.git" "$root/src/repo.git"
  mount --bind "$logs" "$root/logs"
  exec chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /run.sh
' fresh-root "$root" "$work" "$logs" 2>&1 | tee -a "$logs/setup.log"
set -e

summary=$(grep -E '^tests: [0-9]+ passed' "$logs/test.log" 2>/dev/null | tail -n 1)
skips=$(grep -E '^  skip( |:)|\(skipped' "$logs/test.log" 2>/dev/null | head -n 20)
demo_ok=no test_ok=no
grep -q '^make demo: exit 0 ' "$logs/setup.log" && demo_ok=yes
grep -q '^make test: exit 0 ' "$logs/setup.log" && test_ok=yes
echo
echo "== fresh root summary ($work)"
echo "make demo: $([ $demo_ok = yes ] && echo PASS || echo FAIL)  (log: $logs/demo.log)"
echo "make test: $([ $test_ok = yes ] && echo PASS || echo FAIL)  ${summary:-no summary line}  (log: $logs/test.log)"
[ -z "$skips" ] || { echo "skipped tests:"; echo "$skips"; }
grep -E '^  FAIL ' "$logs/test.log" 2>/dev/null | head -n 40 || true
if [ $demo_ok = yes ] && [ $test_ok = yes ] && [ -z "$skips" ]; then echo "fresh root: PASS"; exit 0; fi
echo "fresh root: FAIL"; exit 1
