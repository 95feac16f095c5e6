#!/usr/bin/env bash
# make vet: every relative link in README.md and docs/*.md must resolve inside the repository; anchors must
# name a heading of the target file. Prints each bad link; exit 1 if any.
cd "${1:-.}" || exit 2
root=$(pwd -P)
bad=0
anchor() { # github-style slug of each heading of $1
  grep -E '^#{1,6} ' "$1" | sed -E 's/^#+ //' | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9 _-]//g; s/ /-/g'
}
for f in README.md docs/*.md; do
  dir=$(dirname "$f")
  while IFS= read -r link; do
    case "$link" in http://*|https://*|mailto:*) continue;; esac
    path=${link%%#*}; frag=${link#"$path"}; frag=${frag#\#}
    if [ -z "$path" ]; then target=$f; else target=$dir/$path; fi
    if [ ! -e "$target" ]; then echo "$f: $link: no such file"; bad=1; continue; fi
    real=$(realpath "$target")
    case "$real" in "$root"/*) ;; *) echo "$f: $link: outside the repository"; bad=1; continue;; esac
    if [ -n "$frag" ] && ! anchor "$target" | grep -qx -- "$frag"; then echo "$f: $link: no heading #$frag"; bad=1; fi
  done < <(grep -oE '\]\([^)]+\)' "$f" | sed -E 's/^\]\((.*)\)$/\1/')
done
if grep -rn "\.\./shared" README.md docs/; then echo "a link or mention of a folder outside the repository"; bad=1; fi
exit $bad
