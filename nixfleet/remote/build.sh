# nixfleet's build step on a builder host (deploy.buildOn: HOST): every target's system in one
# Nix invocation, so that what they share is evaluated and built once, then signed with the
# fleet's cache key, which the targets' Nix requires of what they fetch.
# Run as: bash -c "$(cat nix.sh build.sh)" nixfleet-build DIR REF KEY_FILE TIMEOUT HOST... < flake.tar
#   DIR       this flake's directory on the builder, named by its hash (a later deploy of the
#             same flake reuses it): the flake is unpacked in DIR/flake; DIR/roots holds the GC
#             roots of the systems built from it, so that a garbage collection on the builder
#             does not remove them before the targets fetch
#   REF       how Nix names DIR/flake (path:DIR/flake, or path:DIR/flake?dir=nix)
#   KEY_FILE  the fleet's signing key (the agenix secret binary-cache-key)
#   TIMEOUT   seconds the build may take
# Prints "NIXFLEET built=HOST PATH" or "NIXFLEET build_failed=HOST REASON" for each HOST
# (nixfleet/builder.py reads them).
set -uo pipefail
dir=$1 ref=$2 key=$3 limit=$4
shift 4
export NIX_CONFIG="experimental-features = nix-command flakes"
export LC_ALL=C
say() { printf 'NIXFLEET %s=%s\n' "$1" "$2"; }
fail_all() { # REASON
  local host
  for host in "${hosts[@]}"; do say build_failed "$host $1"; done
  exit 0
}
attr() { printf '%s#nixosConfigurations."%s".config.system.build.toplevel' "$ref" "$1"; }
hosts=("$@")

if [ ! -r "$key" ]; then
  cat >/dev/null
  fail_all "cannot sign what it builds: no $key here (the fleet's binary-cache-key secret)"
fi
if [ -d "$dir/flake" ]; then
  cat >/dev/null
  touch "$dir"
else
  # Unpacked beside it, then renamed: a flake directory is whole or absent (another deploy
  # may unpack the same flake at the same time: the first rename wins, both are the same).
  new=$dir/new-$$
  mkdir -p "$new" && tar -x -C "$new" 2>"$dir/tar-$$.log" \
    && { mv -T "$new" "$dir/flake" 2>/dev/null || [ -d "$dir/flake" ]; } \
    || fail_all "could not unpack the flake into $dir/flake: $(tail -n 1 "$dir/tar-$$.log")"
  rm -rf "$new" "$dir/tar-$$.log"
fi
# The newest 3 flakes stay (with their roots); older ones go.
ls -1dt "${dir%/*}"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf

out=$dir/build-$$.json log=$dir/build-$$.log  # this build's own (another may share DIR)
trap 'rm -f "$out" "$log"' EXIT
# One evaluation of every target's system: "HOST DRV OUT" each.
names=$(printf '"%s" ' "${hosts[@]}")
evaluated=()
if timeout "$limit" nix eval --json "$ref#nixosConfigurations" --apply "configurations: map (n: \
    let t = configurations.\${n}.config.system.build.toplevel; in \"\${n} \${t.drvPath} \${t.outPath}\") \
    [ $names ]" >"$out" 2>"$log" </dev/null; then
  mapfile -t evaluated < <(grep -o '"[^"]*"' "$out" | tr -d '"')
else
  # One of them does not evaluate: each on its own names which.
  for host in "${hosts[@]}"; do
    if timeout "$limit" nix eval --raw "$(attr "$host")" --apply \
        't: "${t.drvPath} ${t.outPath}"' >"$out" 2>"$log" </dev/null; then
      evaluated+=("$host $(cat "$out")")
    else
      say build_failed "$host evaluation failed: $(nix_error "$log")"
    fi
  done
fi
drvs=()
for line in "${evaluated[@]}"; do read -r _ drv _ <<< "$line"; drvs+=("$drv"); done
[ "${#drvs[@]}" -gt 0 ] || exit 0
# One build of them all, with parallel jobs: what they share is built once. A failed one
# does not stop the others (--keep-going).
timeout "$limit" nix-store --realise --keep-going --max-jobs auto "${drvs[@]}" \
  >/dev/null 2>"$log" </dev/null || tail -n 20 "$log" >&2
hosts=() paths=()
for line in "${evaluated[@]}"; do
  read -r host drv path <<< "$line"
  if [ -e "$path" ]; then
    hosts+=("$host") paths+=("$path")
  else
    reason=$(grep -F "${drv##*/}" "$log" | tail -n 1)
    say build_failed "$host build failed: ${reason:-$(nix_error "$log")}"
  fi
done

[ "${#paths[@]}" -gt 0 ] || exit 0
nix store sign --key-file "$key" --recursive "${paths[@]}" 2>"$log" \
  || fail_all "signing failed: $(nix_error "$log")"
mkdir -p "$dir/roots"
for i in "${!hosts[@]}"; do
  nix-store --add-root "$dir/roots/${hosts[$i]}" --indirect --realise "${paths[$i]}" \
    >/dev/null 2>&1
  say built "${hosts[$i]} ${paths[$i]}"
done
