# nixfleet's deploy step on a host: one SSH command per host and deploy.
# Run as: bash -c "$(cat health.sh deploy.sh)" nixfleet-deploy NAME=VALUE ...
# action: push | build | dry-activate | test | boot | switch | rollback | health
# Under a per-host lock it applies the uploaded flake delta (atomically), builds the host's
# toplevel, shows the closure difference, then activates it as nixos-rebuild would
# (nix-env --set on the system profile, then bin/switch-to-configuration). For switch and test
# it first arms a watchdog that returns to the previous system unless the deployer confirms
# over a fresh SSH connection within confirm_timeout seconds, and after activating it runs the
# health gate (health.sh); a failed activation or gate rolls back at once. Results are printed
# as "NIXFLEET key=value" lines for the deployer's summary.
set -uo pipefail
action= flake_dir=- flake_ref=- hostname= want_hash=- base_hash=- tarball=- deploy_id= owner=
lock_ttl=3600 target_generation= confirm_timeout=0 rollback=1 health_timeout=60 checks=
prebuilt=
for argument in "$@"; do
  case "${argument%%=*}" in
    action|flake_dir|flake_ref|hostname|want_hash|base_hash|tarball|deploy_id|owner|lock_ttl|\
    target_generation|confirm_timeout|rollback|health_timeout|checks|prebuilt)
      printf -v "${argument%%=*}" '%s' "${argument#*=}" ;;
    *) echo "nixfleet-deploy: unknown argument ${argument%%=*}" >&2; exit 2 ;;
  esac
done
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

if [ "$action" = health ]; then
  if gate; then say gate passed; exit 0; fi
  say gate failed
  say reason "health check failed: $gate_failure"
  exit 1
fi

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
generation_before=$(generation)
say generation_before "$generation_before"
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
if [ -n "$prebuilt" ]; then
  # Built by the deployer (deploy.buildOn: local) and copied here with nix copy.
  [ -e "$prebuilt" ] || finish failed "the system built elsewhere ($prebuilt) is not in the store" 1
  toplevel=$prebuilt
  say built_on deployer
else
  attr="$flake_ref#nixosConfigurations.\"$hostname\".config.system.build.toplevel"
  if ! built=$(nix build "$attr" --no-link --json 2>"$state_dir/build.log"); then
    tail -n 20 "$state_dir/build.log" >&2
    finish failed "build failed: $(tail -n 1 "$state_dir/build.log")" 1
  fi
  toplevel=$(printf '%s' "$built" | sed -n 's/.*"out":"\([^"]*\)".*/\1/p')
  [ -n "$toplevel" ] || finish failed "nix build printed no output path" 1
  say built_on target
fi
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
# --- activate, under a watchdog, then the health gate ----------------------------------------
record_failed_units  # what was failed before does not count against this generation
watchdog=
if [ "$rollback" = 1 ] && [ -n "$system_before" ] && [ "$confirm_timeout" -gt 0 ] \
    && { [ "$action" = switch ] || [ "$action" = test ]; }; then
  watchdog="nixfleet-confirm-$deploy_id"
  revert_script="/run/nixfleet/$watchdog.sh"
  # Absolute paths: a systemd service does not get the login PATH (on NixOS nix-env is in
  # /run/current-system/sw/bin).
  {
    echo "# nixfleet: return to the system before deploy $deploy_id (no confirmation came)"
    [ "$action" = switch ] && \
      echo "$(command -v nix-env) -p $profile --switch-generation $generation_before"
    echo "$system_before/bin/switch-to-configuration $action"
    echo "echo 'no confirmation within ${confirm_timeout}s' > $state_dir/rolled-back-$deploy_id"
  } > "$revert_script"
  # Runs by itself unless the deployer stops the timer from a fresh SSH connection.
  systemd-run --quiet --unit="$watchdog" --on-active="${confirm_timeout}s" \
    --timer-property=AccuracySec=100ms --property=Type=oneshot /bin/sh "$revert_script" \
    || finish failed "could not arm the rollback watchdog" 1
  say watchdog "$watchdog"
fi

roll_back_now() { # REASON: back to the system that ran before this deploy, gate again
  [ -n "$watchdog" ] && systemctl stop "$watchdog.timer" 2>/dev/null
  if [ "$rollback" != 1 ] || [ -z "$system_before" ]; then
    finish failed "$1" 1
  fi
  if [ "$action" = switch ] || [ "$action" = boot ]; then
    nix-env -p "$profile" --switch-generation "$generation_before" >/dev/null 2>&1
  fi
  if [ "$action" != boot ]; then
    "$system_before/bin/switch-to-configuration" "$([ "$action" = test ] && echo test || echo switch)" >&2
    if gate; then say regate passed; else say regate "failed: $gate_failure"; fi
  fi
  finish rolled-back "$1" 1
}

"$toplevel/bin/switch-to-configuration" "$action" >&2
code=$?
phase activate
if [ $code -ne 0 ]; then
  failed_units=$(systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | paste -sd, -)
  roll_back_now "switch-to-configuration $action exited $code (failed units: ${failed_units:-none})"
fi
if [ "$action" != boot ]; then
  gate || roll_back_now "health check failed: $gate_failure"
  phase gate
fi
remember
finish changed "$action done" 0
