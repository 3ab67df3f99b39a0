# nixfleet's health gate, run on the host after activation (and alone: action=health).
# Healthy means: no unit failed that was not failed before the deploy; the system is not newly
# degraded; every service the running generation declares in etc/nixfleet/health.tsv
# (NAME<TAB>UNIT<TAB>PORT lines, written by the flake's modules) is active and its port
# answers; every command check from host or group data (checks: NAME<TAB>TIMEOUT<TAB>COMMAND
# lines) exits 0 within its timeout. Everything is retried every second until health_timeout.
failed_before=
gate_failure=
# Fewest systemctl calls: each is a request that the host's systemd serves, and a fleet-wide
# deploy makes them on every host at once.
failed_units() { systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | sort; }
record_failed_units() { failed_before=$(failed_units); }
port_answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
gate_once() { # sets gate_failure to the first problem found
  gate_failure=
  local new_failed name unit port seconds command i
  # A unit failed now that had not failed before. (The system is degraded exactly when a unit
  # has failed, so this is also "not newly degraded".)
  new_failed=$(comm -13 <(printf '%s\n' "$failed_before") <(failed_units) \
    | grep -v '^$' | paste -sd, -)
  if [ -n "$new_failed" ]; then gate_failure="units failed: $new_failed"; return 1; fi
  if [ -f /run/current-system/etc/nixfleet/health.tsv ]; then
    local -a names=() units=() ports=() states=()
    while IFS=$'\t' read -r name unit port; do
      [ -n "$name" ] || continue
      names+=("$name") units+=("$unit") ports+=("$port")
    done < /run/current-system/etc/nixfleet/health.tsv
    # One call for every service: is-active prints one state per unit, in order.
    [ ${#units[@]} -eq 0 ] || mapfile -t states < <(systemctl is-active "${units[@]}" 2>/dev/null)
    for i in "${!names[@]}"; do
      if [ "${states[i]:-unknown}" != active ]; then
        gate_failure="service ${names[i]}: ${units[i]} is ${states[i]:-unknown}"; return 1
      fi
      if [ -n "${ports[i]}" ] && ! port_answers "${ports[i]}"; then
        gate_failure="service ${names[i]}: port ${ports[i]} does not answer"; return 1
      fi
    done
  fi
  while IFS=$'\t' read -r name seconds command; do
    [ -n "$name" ] || continue
    if ! timeout "$seconds" sh -c "$command" >/dev/null 2>&1; then
      gate_failure="check $name: command failed"; return 1
    fi
  done <<< "$checks"
  return 0
}
gate() { # retried until health_timeout; leaves the last failure in gate_failure
  local deadline=$(( EPOCHSECONDS + health_timeout ))
  until gate_once; do
    [ "$EPOCHSECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
