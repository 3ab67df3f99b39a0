# nixfleet's deploy step on a host: one SSH command per host and deploy.
# Run as: bash -c "$(cat nix.sh health.sh deploy.sh)" nixfleet-deploy NAME=VALUE ...
# (the command line is built in one place: nixfleet/remote/protocol.py, which also reads the
# "NIXFLEET key=value" lines printed here; the keys are documented there).
#
# mode=deploy: under the host's deploy lock, apply the flake delta, build the toplevel, show
# the closure difference, then do what the deployer's Action asks, given as flags:
#   build=1          build the host's toplevel (0: push the flake only)
#   set_profile=1    make it the system profile's new generation (switch, boot)
#   activate=ACTION  run its bin/switch-to-configuration ACTION (switch|test|boot|dry-activate)
#   live=1           ACTION changes the running system (switch, test): health gate afterwards
#   keep_root=1      keep a GC root for a build that is not activated (build)
#   watchdog=SECONDS arm a timer that returns to the previous system unless the deployer
#                    confirms over a fresh SSH connection in time (0: none)
# A failed activation or health gate rolls back at once (rollback=1). What was failing before
# the deploy (units, declared services, command checks) does not count against it, unless
# strict_units=1 (then any failed unit after activation fails it).
# Under the lock every protocol line also goes to $state_dir/result-<deploy id> (the journal),
# so a deployer that lost its connection reads the real result over a new one.
# mode=rollback: under the lock, switch to target_generation (default: the one before).
# mode=health: the health gate alone (health.sh).
set -uo pipefail
mode=deploy flake_dir=- flake_ref=- hostname= want_hash=- tarball=- deploy_id= owner=
lock_ttl=3600 target_generation= rollback=1 health_timeout=60 checks= prebuilt=
substituter= built_on=deployer build=0 set_profile=0 activate= live=0 keep_root=0 watchdog=0 strict_units=0 failing_before=
for argument in "$@"; do
  case "${argument%%=*}" in
    mode|flake_dir|flake_ref|hostname|want_hash|tarball|deploy_id|owner|lock_ttl|\
    target_generation|rollback|health_timeout|checks|prebuilt|substituter|built_on|build|\
    set_profile|activate|live|keep_root|watchdog|strict_units|failing_before)
      printf -v "${argument%%=*}" '%s' "${argument#*=}" ;;
    *) echo "nixfleet-deploy: unknown argument ${argument%%=*}" >&2; exit 2 ;;
  esac
done
# Where the host keeps things (overridable only so that tests can run this without root).
profile=${NIXFLEET_PROFILE:-/nix/var/nix/profiles/system}
current_system=${NIXFLEET_CURRENT_SYSTEM:-/run/current-system}
state_dir=${NIXFLEET_STATE_DIR:-/var/lib/nixfleet}
run_dir=${NIXFLEET_RUN_DIR:-/run/nixfleet}
record=$state_dir/flake.sha256  # every file nixfleet last wrote into the flake directory
RECORD_DAMAGED="record damaged: the whole directory is compared with this repository"
manifest=.nixfleet-manifest     # the same listing, as the deployer wants it (in the delta)
export NIX_CONFIG="experimental-features = nix-command flakes"
export LC_ALL=C  # one sort order, the deployer's (code points)

journal=  # set once this deploy holds the lock
say() { # KEY VALUE: a protocol line, to the journal first (the connection may be gone)
  [ -z "$journal" ] || printf 'NIXFLEET %s=%s\n' "$1" "$2" >> "$journal"
  printf 'NIXFLEET %s=%s\n' "$1" "$2" 2>/dev/null
}
started=${EPOCHREALTIME//[!0-9]/} mark=${EPOCHREALTIME//[!0-9]/}
elapsed() { # VARIABLE MICROSECONDS: "S.mmm" since then, without starting a process (on a busy
  # host, processes started per deploy add up)
  local delta=$(( ${EPOCHREALTIME//[!0-9]/} - $2 ))
  printf -v "$1" '%d.%03d' $(( delta / 1000000 )) $(( delta % 1000000 / 1000 ))
}
phase() { # NAME: seconds since the last phase mark, for the benchmark's breakdown
  local took
  elapsed took "$mark"
  say "phase_$1" "$took"
  mark=${EPOCHREALTIME//[!0-9]/}
}
generation() { readlink "$profile" 2>/dev/null | sed -n 's/^.*system-\([0-9]*\)-link$/\1/p'; }
finish() { # RESULT REASON EXIT
  trap '' PIPE  # decided: a deployer gone now changes nothing (the journal has it)
  print_difference
  say result "$1"
  say reason "$2"
  [ "$3" -eq 0 ] || echo "nixfleet: $hostname: $2" >&2
  say generation_after "$(generation)"
  local took
  elapsed took "$started"
  say duration "$took"
  exit "$3"
}

# --- the lock ---------------------------------------------------------------------------------
# flock on the state directory, held by this process (and its children) for the whole deploy:
# the kernel frees it when they end, however they end, and a live holder is never taken over.
# The holder describes itself while it also holds run_dir's short lock, so a contender that
# fails to get the deploy lock (while holding that short lock) always reads the live holder.
take_lock() {
  mkdir -p "$run_dir" "$state_dir"
  exec 8<"$run_dir" 9<"$state_dir"
  flock 8
  if ! flock -n 9; then
    local since=0 id=? by=?
    read -r since id by < "$run_dir/holder" 2>/dev/null
    flock -u 8
    since=$(date -u -d "@$since" '+%Y-%m-%d %H:%M:%S UTC' 2>/dev/null)
    say result locked
    say reason "locked by $by (deploy $id) since $since"
    echo "nixfleet: $hostname: locked by $by (deploy $id) since $since" >&2
    exit 75
  fi
  printf '%s %s %s\n' "$(date +%s)" "$deploy_id" "$owner" > "$run_dir/holder.new"
  mv -f "$run_dir/holder.new" "$run_dir/holder"
  flock -u 8
  exec 8<&-
  trap release_lock EXIT
  trap lost_deployer PIPE  # the deployer is gone: end (releasing the lock), do not go on
  rm -f "$state_dir"/result-*  # the last deploy's journal (kept until now for status)
  journal="$state_dir/result-$deploy_id"
  : > "$journal"
  say started "$(date +%s) $owner"  # for nixfleet status: when and by whom
  exec 7> >(reap_holder)
}
lost_deployer() {
  trap '' PIPE
  say result failed
  say reason "the deployer's connection was lost before activation; nothing was activated"
  exit 141
}
reap_holder() { # a deploy step killed outright (SIGKILL runs no trap) leaves no holder behind:
  # this reads the pipe on fd 7, whose write end only this deploy's processes hold, so it gets
  # end of file when the last of them is gone (the lock is free then), and removes the holder
  # if it is still this deploy's. It holds neither lock nor the connection.
  trap '' HUP INT TERM PIPE
  exec 6<&0 </dev/null >/dev/null 2>&1 7>&- 8<&- 9<&-
  local _ id=
  read -r _ <&6  # nothing is ever written: returns at end of file
  exec 6<&- 8<"$run_dir"
  flock 8
  read -r _ id _ < "$run_dir/holder" 2>/dev/null
  [ "$id" != "$deploy_id" ] || rm -f "$run_dir/holder"
}
release_lock() { # under the short lock, so that no contender finds the lock without its holder
  exec 8<"$run_dir"
  flock 8
  rm -f "$run_dir/holder" "$build_out" "$difference_out" ${upload:+"$upload"}
  [ -f "$build_log" ] && mv -f "$build_log" "$state_dir/build.log"  # the last build's log
  flock -u 9
}

# --- the flake directory ----------------------------------------------------------------------
listing() { # DIR: "SHA256  PATH" of every file, sorted by path (the deployer's manifest format)
  (cd "$1" 2>/dev/null && find . -type f -printf '%P\0' | sort -z | xargs -0r sha256sum --)
}
strays() { # DIR: what is neither a file nor a directory holding one (links, empty directories)
  (cd "$1" 2>/dev/null && find . -mindepth 1 \( -type d -empty -o ! -type d ! -type f \) \
    -printf '%P\n')
}
hash_of() { sha256sum | cut -c1-64; }

recover_swap() { # a swap cut short by a dropped connection or a kill: finish or undo it
  [ -e "$flake_dir" ] || [ ! -d "$flake_dir.nixfleet-old" ] \
    || mv -T "$flake_dir.nixfleet-old" "$flake_dir"
  rm -rf "$flake_dir.nixfleet-old" "$flake_dir.nixfleet-new"
}

record_damaged() { # RECORD: a line that is not "SHA256  PATH", or a path twice (then none of
  # it can be trusted: garbage in it would be named as deleted files)
  local line
  local -A seen=()
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    [[ $line =~ ^[0-9a-f]{64}\ \ [^[:space:]] ]] || return 0
    [ -z "${seen[${line:66}]+listed}" ] || return 0
    seen[${line:66}]=1
  done <<< "$1"
  return 1
}
keep_backups=3  # the newest backups of a hand-edited flake directory kept; older ones go
prune_backups() {
  local old
  while IFS= read -r old; do
    [ -n "$old" ] || continue
    rm -rf -- "$old" && say backup_removed "$old"
  done < <(find "$(dirname "$flake_dir")" -maxdepth 1 -name "${flake_dir##*/}.nixfleet-backup-*" \
      -printf '%p\n' | sort -rV | tail -n +$((keep_backups + 1)))
}

report_drift() { # CURRENT OURS STRAYS: how the directory differs from what nixfleet last
  # wrote (OURS); a copy of it is kept when it holds anything nixfleet did not write
  local kind path keep=0
  while read -r kind path; do
    say drift "$kind $path"
    [ "$kind" = deleted ] || keep=1
  done < <(awk 'FNR == 1 { part++ } $0 == "" { next }
      part == 1 { ours[substr($0, 67)] = $0; next }
      { p = substr($0, 67); seen[p] = 1
        if (!(p in ours)) print "added", p; else if (ours[p] != $0) print "edited", p }
      END { for (p in ours) if (!(p in seen)) print "deleted", p }' \
      <(printf '%s\n' "$2") <(printf '%s\n' "$1") | sort -k2
    [ -z "$3" ] || sed 's/^/added /' <<< "$3")
  if [ "$keep" = 1 ]; then
    local backup
    backup="$flake_dir.nixfleet-backup-$deploy_id"  # the deploy id starts with the date
    cp -a "$flake_dir" "$backup" || finish failed "could not back up $flake_dir to $backup" 1
    say backup "$backup"
    prune_backups
  fi
}

read_file() { # VARIABLE FILE: the file's content without its last newline ("" if none)
  local content=
  [ -f "$2" ] && IFS= read -r -d '' content < "$2"
  printf -v "$1" '%s' "${content%$'\n'}"
}

apply_flake() { # the uploaded delta, applied to a copy that is then swapped in
  recover_swap
  local current stray ours want_listing
  current=$(listing "$flake_dir")
  stray=$(strays "$flake_dir")
  read_file ours "$record"
  local damaged=0
  # A NUL byte ends what bash reads of it: counted apart.
  if record_damaged "$ours" || { [ -f "$record" ] \
      && [ "$(tr -d '\000' < "$record" | wc -c)" != "$(wc -c < "$record")" ]; }; then
    damaged=1
  fi
  if [ "$tarball" = - ]; then
    # Nothing sent: the deployer saw the flake it wants. Is it still so, under the lock?
    [ -z "$stray" ] && [ "$(hash_of <<< "$current")" = "$want_hash" ] \
      || finish failed "the flake in $flake_dir changed since this deploy read it; deploy again" 1
    [ "$damaged" = 0 ] || say drift "$RECORD_DAMAGED"
    [ "$current" = "$ours" ] || write_record "$current"
    say flake unchanged
    return
  fi
  local staging="$flake_dir.nixfleet-new"
  # A copy of links to the same files (cheap however large the fleet's flake): tar replaces a
  # changed file by a new one (it unlinks before it writes), so the live directory is never
  # written through a link. Across filesystems (a mounted flake directory), a real copy.
  if [ -d "$flake_dir" ]; then
    cp -al "$flake_dir" "$staging" 2>/dev/null \
      || { rm -rf "$staging"; cp -a "$flake_dir" "$staging"; }
  else mkdir -p "$staging"; fi
  case "$tarball" in
    base64:*) base64 -d <<< "${tarball#base64:}" | tar -xf - -C "$staging" ;;
    *) tar -xf "$tarball" -C "$staging" ;;
  esac || finish failed "could not unpack the flake delta" 1
  read_file want_listing "$staging/$manifest"
  rm -f "$staging/$manifest"
  [ "$(hash_of <<< "$want_listing")" = "$want_hash" ] \
    || { rm -rf "$staging"; finish failed "the flake delta does not match its manifest" 1; }
  # Everything the manifest does not list goes: files the deployer no longer has, strays.
  local -A wanted=()
  local sha path removed=0
  while read -r sha path; do wanted[$path]=1; done <<< "$want_listing"
  while read -r sha path; do
    [ -z "$path" ] || [ -n "${wanted[$path]+listed}" ] || { rm -f -- "$staging/$path"; removed=1; }
  done <<< "$current"
  while IFS= read -r path; do
    [ -z "$path" ] || { rm -rf -- "${staging:?}/$path"; removed=1; }
  done <<< "$stray"
  [ "$removed" = 0 ] || find "$staging" -mindepth 1 -type d -empty -delete
  # Exactly the flake the deployer wants, file by file (it chose the delta before the lock).
  if ! (cd "$staging" && sha256sum --quiet --strict -c - <<< "$want_listing" >/dev/null 2>&1); then
    rm -rf "$staging"
    finish failed "the flake in $flake_dir changed since this deploy read it; deploy again" 1
  fi
  if [ "$damaged" = 1 ]; then
    # What nixfleet wrote is unknown: the directory is compared with what is wanted.
    say drift "$RECORD_DAMAGED"
    ours=$want_listing
  fi
  [ ! -d "$flake_dir" ] || { [ "$current" = "$ours" ] && [ -z "$stray" ]; } \
    || report_drift "$current" "$ours" "$stray"
  sync
  trap '' HUP INT TERM  # the swap must finish even if the connection drops now
  if [ -e "$flake_dir" ]; then mv -T "$flake_dir" "$flake_dir.nixfleet-old"; fi
  mv -T "$staging" "$flake_dir" && rm -rf "$flake_dir.nixfleet-old"
  write_record "$want_listing"
  trap - HUP INT TERM
  say flake changed
}
write_record() {
  printf '%s\n' "$1" > "$record.new" && mv -f "$record.new" "$record"
}

# --- build, difference, activation -------------------------------------------------------------
satisfied() { # TOPLEVEL: does the host already run it as asked (the profile and/or live)?
  [ -n "$1" ] && [ -n "$activate" ] && [ "$activate" != dry-activate ] \
    && { [ "$set_profile" = 0 ] || [ "$1" = "$profile_target" ]; } \
    && { [ "$live" = 0 ] || [ "$1" = "$system_before" ]; }
}
already() { finish unchanged "$([ "$live" = 1 ] && echo "already active" || echo "already the boot default")" 0; }

heartbeat_until_done() { # PID: wait for it while a background heartbeat writes an empty line
  # every second; if the deployer is gone (killed, connection dropped), the write fails and the
  # heartbeat ends this deploy at once (SIGPIPE), freeing the lock, instead of holding it until
  # the build is done. The heartbeat holds neither lock, and its sleep not the connection
  # (the deployer's SSH command would wait for it to end).
  ( exec 7>&- 8<&- 9<&-
    trap '' PIPE
    # Ends with the deploy step, however it ends (a killed one must not keep the connection;
    # not yet reaped, it is a zombie, which kill -0 still finds).
    local state=
    while sleep 1 </dev/null >/dev/null 2>&1 \
        && read -r _ _ state _ < "/proc/$$/stat" 2>/dev/null && [ "$state" != Z ]; do
      echo 2>/dev/null || { kill -PIPE $$; exit; }
    done ) &
  local heartbeat=$! code=0
  wait "$1" || code=$?
  kill "$heartbeat" 2>/dev/null
  return "$code"
}

fetch_system() { # the system built on $built_on, from its binary cache: this host's Nix checks
  # every path's signature against the keys it trusts (the fleet's), so one signed by any
  # other key is refused here, before anything changes
  local listing path size bytes=0
  declare -A sizes=()
  # Bytes fetched: the closure's paths this store lacks, at their NAR size.
  listing=$(nix path-info --recursive --size --store "$substituter" "$prebuilt" 2>"$build_log") \
    || finish failed "fetching the system built on $built_on failed: $(nix_error "$build_log")" 1
  while read -r path size; do sizes[$path]=$size; done <<< "$listing"
  while read -r path; do
    [ -z "$path" ] || bytes=$(( bytes + ${sizes[$path]:-0} ))
  done < <(nix-store --check-validity --print-invalid "${!sizes[@]}" 2>/dev/null)
  ( exec 7>&- 9<&-; exec timeout "$lock_ttl" nix copy --from "$substituter" "$prebuilt" ) \
    >/dev/null 2>"$build_log" </dev/null &
  heartbeat_until_done $! \
    || finish failed "the system built on $built_on was refused or not fetched: $(nix_error "$build_log")" 1
  say fetched_bytes "$bytes"
}

build_system() {
  if [ -n "$prebuilt" ]; then
    # Built elsewhere: by the deployer (deploy.buildOn: local), which copied it here with nix
    # copy, or by a builder host (built_on), whose binary cache it is fetched from.
    [ -z "$substituter" ] || fetch_system
    [ -e "$prebuilt" ] || finish failed "the system built elsewhere ($prebuilt) is not in the store" 1
    toplevel=$prebuilt
    say built_on "$built_on"
  else
    local attr="$flake_ref#nixosConfigurations.\"$hostname\".config.system.build.toplevel"
    # Bounded by lock_ttl: no deploy holds the host's lock longer than that building. The
    # build itself does not hold the lock (fd 9 closed), so when this deploy ends, so does it.
    # Its own output files: a build orphaned by a killed deploy cannot answer for this one.
    ( exec 7>&- 9<&-; exec timeout "$lock_ttl" nix build "$attr" --no-link --json ) \
      >"$build_out" 2>"$build_log" </dev/null &
    if ! heartbeat_until_done $!; then
      tail -n 20 "$build_log" >&2
      finish failed "build failed: $(nix_error "$build_log")" 1
    fi
    toplevel=$(sed -n 's/.*"out":"\([^"]*\)".*/\1/p' "$build_out")
    [ -n "$toplevel" ] || finish failed "nix build printed no output path" 1
    say built_on target
  fi
  say toplevel "$toplevel"
}

show_difference() { # packages with versions (as nix store diff-closures shows), size delta;
  # in the background: activation need not wait for it (print_difference collects it)
  [ -n "$system_before" ] && [ "$toplevel" != "$system_before" ] || return 0
  ( exec 7>&- 8<&- 9<&- 2>/dev/null  # holds no lock, nor the connection
    journal=  # its lines reach the journal with print_difference, in their place
    nix store diff-closures "$system_before" "$toplevel" 2>/dev/null \
      | sed 's/\x1b\[[0-9;]*m//g' | while IFS= read -r line; do say diff "$line"; done
    nix path-info -S "$system_before" "$toplevel" 2>/dev/null \
      | awk -v before="$system_before" -v after="$toplevel" \
          '$1 == before { print "NIXFLEET closure_before=" $2 }
           $1 == after { print "NIXFLEET closure_after=" $2 }'
  ) > "$difference_out" &
  difference_pid=$!
}
print_difference() {
  [ -n "$difference_pid" ] || return 0
  wait "$difference_pid"
  difference_pid=
  [ -z "$journal" ] || cat "$difference_out" >> "$journal"
  cat "$difference_out" 2>/dev/null
}

remember() { printf '%s %s\n' "$want_hash" "$toplevel" > "$state_dir/last-deploy.new" \
  && mv -f "$state_dir/last-deploy.new" "$state_dir/last-deploy"; }

arm_watchdog() { # returns to the system before unless the deployer stops the timer in time
  [ "$watchdog" -gt 0 ] && [ "$rollback" = 1 ] && [ -n "$system_before" ] || return 0
  watchdog_unit="nixfleet-confirm-$deploy_id"
  # Absolute paths: a systemd service does not get the login PATH (on NixOS nix-env is in
  # /run/current-system/sw/bin). The command is the unit's own: nothing is left in run_dir.
  # No ";" in it: systemd escapes that one when it reloads a transient unit.
  local revert="$system_before/bin/switch-to-configuration $activate"
  [ "$set_profile" = 1 ] && revert="$(command -v nix-env) -p $profile --switch-generation $generation_before && $revert"
  revert="$revert || true && echo 'no confirmation within ${watchdog}s' > $state_dir/rolled-back-$deploy_id"
  systemd-run --quiet --unit="$watchdog_unit" --on-active="${watchdog}s" \
    --description="nixfleet: back to the system before deploy $deploy_id unless confirmed" \
    --timer-property=AccuracySec=100ms --property=Type=oneshot /bin/sh -c "$revert" \
    || finish failed "could not arm the rollback watchdog" 1
  say watchdog "$watchdog_unit"
}

run_activation() { # TOPLEVEL ACTION: its switch-to-configuration. Its output goes to a file,
  # then to the deployer: a switch that cuts the connection (it restarts the network or sshd)
  # must not die writing to it.
  local code
  "$1/bin/switch-to-configuration" "$2" > "$state_dir/activation.log" 2>&1 </dev/null
  code=$?
  cat "$state_dir/activation.log" >&2 2>/dev/null
  return "$code"
}
newly_failed_units() { # failed now and not before (every failed one with strict_units=1)
  comm -13 <(sed -n 's/^unit //p' <<< "$([ "$strict_units" = 1 ] || echo "$failing_before")" | sort) \
    <(failed_units) | grep -v '^$' | paste -sd, - | sed 's/,/, /g'
}
activation_failure() { # EXIT CODE: why activation failed, or nothing. Exit 4 means a unit is
  # failed, any unit (as NixOS's switch-to-configuration says it): only a new one counts.
  [ "$1" -eq 0 ] && return
  local new_failed
  new_failed=$(newly_failed_units)
  [ "$1" -eq 4 ] && [ -z "$new_failed" ] && [ -n "$(failed_units)" ] && return
  echo "switch-to-configuration $activate exited $1 (failed units: ${new_failed:-none})"
}
where_it_stands() { # what runs now and what boots next, after a rollback that failed
  local running now=another system next
  running=$(readlink -f "$current_system" 2>/dev/null)
  [ "$running" != "$toplevel" ] || now="the new system"
  [ "$running" != "$system_before" ] || now="the system from before this deploy"
  next=$(sed -n 's/^default[[:space:]]*nixos-generation-\([0-9]*\).*/\1/p' \
    "${NIXFLEET_BOOT_DIR:-/boot}/loader/loader.conf" 2>/dev/null)
  echo "it runs $now; it boots generation ${next:-$(generation)} next"
}

roll_back_now() { # REASON: back to the system that ran before this deploy, gate again
  [ -n "$watchdog_unit" ] && systemctl stop "$watchdog_unit.timer" 2>/dev/null
  [ "$rollback" = 1 ] && [ -n "$system_before" ] || finish failed "$1" 1
  # The rollback is judged by getting back to the system before, whose units failing then
  # (strict_units or not) do not make it fail.
  local broken= code strict_units=0
  if [ "$set_profile" = 1 ] \
      && ! nix-env -p "$profile" --switch-generation "$generation_before" >/dev/null 2>&1; then
    broken="nix-env --switch-generation $generation_before failed"
  fi
  if [ -z "$broken" ] && [ "$set_profile" = 1 ] && [ "$live" = 0 ]; then
    # boot: the old default, in the bootloader too
    run_activation "$(readlink -f "$profile")" boot \
      || broken="switch-to-configuration boot of generation $generation_before exited $?"
  fi
  if [ -z "$broken" ] && [ "$live" = 1 ]; then
    run_activation "$system_before" "$activate"
    code=$?
    broken=$(activation_failure "$code")
    [ -n "$broken" ] || { if gate; then say regate passed; else say regate "failed: $gate_failure"; fi; }
  fi
  [ -z "$broken" ] || finish rollback-failed "$1; the rollback failed too: $broken; $(where_it_stands)" 2
  finish rolled-back "$1" 1
}

activate_system() {
  [ "$set_profile" = 1 ] && { nix-env -p "$profile" --set "$toplevel" >/dev/null 2>&1 \
    || finish failed "nix-env --set on the system profile failed" 1; }
  record_baseline  # what failed before does not count against it (here, or after a reboot)
  # From here the activation, the gate and any rollback finish whatever happens to the
  # connection; the watchdog decides a host the deployer cannot reach again.
  trap '' HUP PIPE
  arm_watchdog
  run_activation "$toplevel" "$activate"
  local code=$? failure
  phase activate
  failure=$(activation_failure "$code")
  [ -z "$failure" ] || roll_back_now "$failure"
  if [ "$live" = 1 ]; then
    gate || roll_back_now "health check failed: $gate_failure"
    phase gate
    say_unjudged
  fi
}

roll_back_to_generation() {
  local current; current=$(generation)
  if [ -z "$target_generation" ]; then
    target_generation=$(find "$(dirname "$profile")" -maxdepth 1 -name 'system-*-link' -printf '%f\n' \
      | sed -n 's/^system-\([0-9]*\)-link$/\1/p' | sort -n | awk -v c="$current" '$1 < c' | tail -1)
  fi
  local link; link="$(dirname "$profile")/system-$target_generation-link"
  [ -n "$target_generation" ] && [ -e "$link" ] \
    || finish failed "no generation ${target_generation:-before $current} to roll back to" 1
  nix-env -p "$profile" --switch-generation "$target_generation" >/dev/null 2>&1 \
    || finish failed "nix-env --switch-generation $target_generation failed" 1
  failing_before=$(failed_units | sed 's/^/unit /') activate=switch
  run_activation "$(readlink -f "$link")" switch
  local failure; failure=$(activation_failure $?)
  [ -z "$failure" ] || finish failed "$failure on generation $target_generation" 1
  finish changed "rolled back to generation $target_generation" 0
}

# --- main -------------------------------------------------------------------------------------
if [ "$mode" = health ]; then
  if gate; then say gate passed; say_unjudged; exit 0; fi
  say gate failed
  say reason "health check failed: $gate_failure"
  exit 1
fi
upload= build_out="$state_dir/build-$deploy_id.out" build_log="$state_dir/build-$deploy_id.log"
difference_out="$state_dir/difference-$deploy_id" difference_pid=
[ "$tarball" = - ] || [ "${tarball#base64:}" != "$tarball" ] || upload=$tarball
trap 'rm -f ${upload:+"$upload"}' EXIT  # an uploaded delta goes, even when the host is locked
take_lock
phase lock
generation_before=$(generation)
say generation_before "$generation_before"
system_before=$(readlink -f "$current_system" 2>/dev/null)
profile_target=$(readlink -f "$profile" 2>/dev/null)
watchdog_unit= toplevel=
[ "$mode" = rollback ] && roll_back_to_generation
apply_flake
phase flake
[ "$build" = 1 ] || finish changed "flake pushed" 0
last_hash= last_toplevel=
[ -f "$state_dir/last-deploy" ] && read -r last_hash last_toplevel < "$state_dir/last-deploy"
[ "$last_hash" = "$want_hash" ] && satisfied "$last_toplevel" && already
build_system
phase build
show_difference
if satisfied "$toplevel"; then remember; already; fi
case "$activate" in
  "") [ "$keep_root" = 1 ] && nix-store --add-root "$state_dir/last-build" --indirect \
        --realise "$toplevel" >/dev/null 2>&1
      finish built "built, not activated" 0 ;;
  dry-activate)
      "$toplevel/bin/switch-to-configuration" dry-activate | while IFS= read -r line; do
        say would "$line"; done
      code=${PIPESTATUS[0]}
      [ "$code" -eq 0 ] || finish failed "switch-to-configuration dry-activate exited $code" 1
      finish built "dry-activate: nothing was changed" 0 ;;
esac
activate_system
remember
finish changed "$activate done" 0
