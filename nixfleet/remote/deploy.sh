# nixfleet's deploy step on a host: one SSH command per host and deploy.
# Run as: bash -c "$(cat deploy.sh)" nixfleet-deploy ACTION FLAKE_DIR FLAKE_REF HOST \
#           WANT_HASH BASE_HASH TARBALL DEPLOY_ID OWNER LOCK_TTL [GENERATION]
# ACTION: push | build | dry-activate | test | boot | switch | rollback
# Under a per-host lock it applies the uploaded flake delta (atomically), builds the host's
# toplevel, shows the closure difference, then activates it as nixos-rebuild would
# (nix-env --set on the system profile, then bin/switch-to-configuration). Results are
# printed as "NIXFLEET key=value" lines for the deployer's summary.
set -uo pipefail
action=$1 flake_dir=$2 flake_ref=$3 hostname=$4 want_hash=$5 base_hash=$6 tarball=$7
deploy_id=$8 owner=$9 lock_ttl=${10} target_generation=${11:-}
profile=/nix/var/nix/profiles/system
state_dir=/var/lib/nixfleet
lock=/run/nixfleet/deploy.lock
started=$(date +%s.%N)
export NIX_CONFIG="experimental-features = nix-command flakes"

say() { printf 'NIXFLEET %s=%s\n' "$1" "$2"; }
mark=$started
phase() { # NAME: seconds since the last phase mark, for the benchmark's breakdown
  local now; now=$(date +%s.%N)
  say "phase_$1" "$(awk -v a="$now" -v b="$mark" 'BEGIN { printf "%.3f", a - b }')"
  mark=$now
}
finish() { # RESULT REASON EXIT
  say result "$1"
  say reason "$2"
  [ "$3" -eq 0 ] || echo "nixfleet: $hostname: $2" >&2
  say generation_after "$(generation)"
  say system_after "$(readlink -f /run/current-system 2>/dev/null)"
  say duration "$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { printf "%.2f", a - b }')"
  exit "$3"
}
generation() { readlink "$profile" 2>/dev/null | sed -n 's/^system-\([0-9]*\)-link$/\1/p'; }

# --- the lock: mkdir is atomic; a holder older than LOCK_TTL seconds is stale ----------------
mkdir -p /run/nixfleet "$state_dir"
if ! mkdir "$lock" 2>/dev/null; then
  read -r holder_since holder_id holder_owner < "$lock/owner" 2>/dev/null || holder_since=0
  now=$(date +%s)
  if [ $((now - ${holder_since:-0})) -lt "$lock_ttl" ]; then
    since=$(date -u -d "@$holder_since" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null)
    say result locked
    say reason "locked by ${holder_owner:-?} (deploy ${holder_id:-?}) since $since"
    echo "nixfleet: $hostname: locked by ${holder_owner:-?} (deploy ${holder_id:-?}) since $since" >&2
    exit 75
  fi
  echo "nixfleet: taking over a stale lock of ${holder_owner:-?} (deploy ${holder_id:-?})" >&2
fi
printf '%s %s %s\n' "$(date +%s)" "$deploy_id" "$owner" > "$lock/owner"
tar_file=
trap 'rm -rf "$lock" ${tar_file:+"$tar_file"}' EXIT
case "$tarball" in
  -) ;;
  base64:*) # a small delta came inside the command itself
    tar_file="/tmp/nixfleet-$deploy_id.tar"
    printf '%s' "${tarball#base64:}" | base64 -d > "$tar_file" \
      || finish failed "could not decode the flake delta" 1
    tarball=$tar_file ;;
  *) tar_file=$tarball ;;
esac

phase lock
say generation_before "$(generation)"
system_before=$(readlink -f /run/current-system 2>/dev/null)
say system_before "$system_before"

# --- the flake: apply the uploaded delta to a copy, then swap it in ---------------------------
[ -e "$flake_dir" ] || [ ! -e "$flake_dir.nixfleet-old" ] || mv "$flake_dir.nixfleet-old" "$flake_dir"
if [ "$tarball" != "-" ]; then
  current_hash=$(cat "$flake_dir/.nixfleet-flake-hash" 2>/dev/null || echo none)
  if [ "$current_hash" != "$base_hash" ] && [ "$base_hash" != "any" ]; then
    finish failed "the flake in $flake_dir changed since this deploy read it" 1
  fi
  staging="$flake_dir.nixfleet-new"
  rm -rf "$staging"
  if [ -d "$flake_dir" ]; then cp -a "$flake_dir" "$staging"; else mkdir -p "$staging"; fi
  tar -xf "$tarball" -C "$staging" || finish failed "could not unpack the flake" 1
  # Files the deployer no longer has are removed (the manifest lists every wanted file).
  (cd "$staging" && find . -type f ! -name .nixfleet-manifest ! -name .nixfleet-flake-hash \
     | sed 's|^\./||' | sort | comm -23 - <(sort .nixfleet-manifest) | xargs -r rm -f)
  echo "$want_hash" > "$staging/.nixfleet-flake-hash"
  sync
  trap '' HUP INT  # the swap must finish even if the connection drops now
  rm -rf "$flake_dir.nixfleet-old"
  if [ -e "$flake_dir" ]; then mv "$flake_dir" "$flake_dir.nixfleet-old"; fi
  mv "$staging" "$flake_dir" && rm -rf "$flake_dir.nixfleet-old"
  say flake changed
else
  say flake unchanged
fi
phase flake
[ "$action" = push ] && finish changed "flake pushed" 0

# --- rollback: the given generation, or the one before the current ---------------------------
if [ "$action" = rollback ]; then
  current=$(generation)
  if [ -z "$target_generation" ]; then
    target_generation=$(ls -d /nix/var/nix/profiles/system-*-link 2>/dev/null \
      | sed -n 's|.*/system-\([0-9]*\)-link$|\1|p' | sort -n | awk -v c="$current" '$1 < c' | tail -1)
  fi
  [ -n "$target_generation" ] && [ -e "/nix/var/nix/profiles/system-$target_generation-link" ] \
    || finish failed "no generation ${target_generation:-before $current} to roll back to" 1
  toplevel=$(readlink -f "/nix/var/nix/profiles/system-$target_generation-link")
  nix-env -p "$profile" --switch-generation "$target_generation" >/dev/null 2>&1 \
    || finish failed "nix-env --switch-generation $target_generation failed" 1
  "$toplevel/bin/switch-to-configuration" switch >&2 \
    || finish failed "switch-to-configuration failed with exit $? on generation $target_generation" 1
  finish changed "rolled back to generation $target_generation" 0
fi

# --- nothing to do: same flake as the last successful deploy, still active -------------------
last_hash= last_toplevel=
[ -f "$state_dir/last-deploy" ] && read -r last_hash last_toplevel < "$state_dir/last-deploy"
profile_target=$(readlink -f "$profile" 2>/dev/null)
if [ "$last_hash" = "$want_hash" ] && [ -n "$last_toplevel" ]; then
  case "$action" in
    switch) [ "$last_toplevel" = "$system_before" ] && [ "$last_toplevel" = "$profile_target" ] \
              && finish unchanged "already active" 0 ;;
    test)   [ "$last_toplevel" = "$system_before" ] && finish unchanged "already active" 0 ;;
    boot)   [ "$last_toplevel" = "$profile_target" ] && finish unchanged "already the boot default" 0 ;;
  esac
fi

# --- build ------------------------------------------------------------------------------------
attr="$flake_ref#nixosConfigurations.\"$hostname\".config.system.build.toplevel"
if ! built=$(nix build "$attr" --no-link --json 2>"$state_dir/build.log"); then
  tail -n 20 "$state_dir/build.log" >&2
  finish failed "build failed: $(tail -n 1 "$state_dir/build.log")" 1
fi
toplevel=$(printf '%s' "$built" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
[ -n "$toplevel" ] || finish failed "nix build printed no output path" 1
say toplevel "$toplevel"
phase build

# --- what changes: packages with versions (as nix store diff-closures shows), size delta -----
if [ -n "$system_before" ] && [ "$toplevel" != "$system_before" ]; then
  nix store diff-closures "$system_before" "$toplevel" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g' \
    | while IFS= read -r line; do say diff "$line"; done
  size() { nix path-info -S "$1" 2>/dev/null | awk '{print $2}'; }
  say closure_before "$(size "$system_before")"
  say closure_after "$(size "$toplevel")"
fi

remember() { printf '%s %s\n' "$want_hash" "$toplevel" > "$state_dir/last-deploy.tmp" \
  && mv "$state_dir/last-deploy.tmp" "$state_dir/last-deploy"; }

case "$action" in
  build)
    nix-store --add-root "$state_dir/last-build" --indirect --realise "$toplevel" >/dev/null 2>&1
    finish built "built, not activated" 0 ;;
  dry-activate)
    "$toplevel/bin/switch-to-configuration" dry-activate | while IFS= read -r line; do
      say would "$line"; done
    finish built "dry-activate: nothing was changed" 0 ;;
esac

if [ "$action" = switch ] || [ "$action" = test ]; then
  if [ "$toplevel" = "$system_before" ] && { [ "$action" = test ] || [ "$toplevel" = "$profile_target" ]; }; then
    remember
    finish unchanged "already active" 0
  fi
fi
if [ "$action" = switch ] || [ "$action" = boot ]; then
  if [ "$toplevel" = "$profile_target" ] && [ "$action" = boot ]; then
    remember
    finish unchanged "already the boot default" 0
  fi
  nix-env -p "$profile" --set "$toplevel" >/dev/null 2>&1 \
    || finish failed "nix-env --set on the system profile failed" 1
fi
"$toplevel/bin/switch-to-configuration" "$action" >&2
code=$?
phase activate
if [ $code -ne 0 ]; then
  failed_units=$(systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | paste -sd, -)
  finish failed "switch-to-configuration $action exited $code (failed units: ${failed_units:-none})" $code
fi
remember
finish changed "$action done" 0
