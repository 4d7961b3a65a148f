#!/bin/sh
# tools/install.sh: `make install` and `make uninstall`.
#   tools/install.sh DESTDIR PREFIX BINARY "DOC FILES" "MAN1 PAGES" "MAN5 PAGES"
#   tools/install.sh --uninstall DESTDIR PREFIX
# Install puts the binary in PREFIX/bin, the Lua library and the playbooks in
# PREFIX/share/rollout, docs/ and the top-level docs in PREFIX/share/doc/rollout and the man
# pages in PREFIX/share/man/man{1,5}. Every file it writes and every directory it creates is
# listed in PREFIX/share/rollout/install-manifest (paths without DESTDIR); uninstall removes
# exactly those files, then those directories if they are empty, then the manifest.
# An install over an earlier one first removes what the earlier manifest lists.
set -eu
cd "$(dirname "$0")/.."

if [ "${1:-}" = --uninstall ]; then
  dest=$2 prefix=$3
  manifest="$dest$prefix/share/rollout/install-manifest"
  [ -f "$manifest" ] || { echo "make uninstall: nothing installed under $dest$prefix (no $manifest)"; exit 0; }
  list=$(cat "$manifest")
  printf '%s\n' "$list" | grep '^f ' | cut -c3- | while IFS= read -r p; do rm -f "$dest$p"; done
  rm -f "$manifest"
  # the directories install created, deepest first; one that holds something else stays
  printf '%s\n' "$list" | grep '^d ' | cut -c3- | sort -r | while IFS= read -r p; do
    rmdir "$dest$p" 2>/dev/null || true; done
  echo "make uninstall: removed rollout from $dest$prefix"
  exit 0
fi

dest=$1 prefix=$2 bin=$3 docs=$4 man1=$5 man5=$6
manifest="$dest$prefix/share/rollout/install-manifest"
[ -f "$manifest" ] && sh "$0" --uninstall "$dest" "$prefix" >/dev/null
list=$(mktemp)
trap 'rm -f "$list"' EXIT

mkdirs() { # mkdirs DIR: create DIR and its missing parents, listing the ones created
  d=$1 missing=
  while [ ! -d "$dest$d" ]; do missing="$d
$missing"; d=$(dirname "$d"); done
  printf '%s' "$missing" | while IFS= read -r m; do
    [ -n "$m" ] || continue
    mkdir "$dest$m"; echo "d $m" >> "$list"; done
}
put() { # put MODE SOURCE DIR
  mkdirs "$3"
  install -m "$1" "$2" "$dest$3/$(basename "$2")"
  echo "f $3/$(basename "$2")" >> "$list"
}
tree() { # tree SOURCE-DIR DEST-DIR: every file under SOURCE-DIR, same layout
  find "$1" -type f | sort | while IFS= read -r f; do
    sub=$(dirname "${f#"$1"/}")
    if [ "$sub" = . ]; then put 644 "$f" "$2"; else put 644 "$f" "$2/$sub"; fi
  done
}

put 755 "$bin" "$prefix/bin"
tree lua/rollout "$prefix/share/rollout/lua/rollout"
tree playbooks "$prefix/share/rollout/playbooks"
for f in $docs; do put 644 "$f" "$prefix/share/doc/rollout"; done
if [ -d docs ]; then tree docs "$prefix/share/doc/rollout/docs"; fi
for f in $man1; do put 644 "$f" "$prefix/share/man/man1"; done
for f in $man5; do put 644 "$f" "$prefix/share/man/man5"; done

mkdirs "$prefix/share/rollout"
echo "f ${manifest#"$dest"}" >> "$list"
cp "$list" "$manifest"
echo "make install: $(grep -c '^f ' "$manifest") files under $dest$prefix (listed in ${manifest#"$dest"})"
