# nixfleet's health gate, run on the host after activation (and alone: action=health).
# Healthy means: no unit failed that was not failed before the deploy; the system is not newly
# degraded; every service the running generation declares in etc/nixfleet/health.tsv
# (NAME<TAB>UNIT<TAB>PORT lines, written by the flake's modules) is active and its port
# answers; every command check from host or group data (checks: NAME<TAB>TIMEOUT<TAB>COMMAND
# lines) exits 0 within its timeout. Everything is retried every second until health_timeout.
failed_before=
state_before=running
gate_failure=
NL='
'
record_failed_units() {
  failed_before=$(systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | sort)
  state_before=$(systemctl is-system-running 2>/dev/null)
}
port_answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
gate_once() { # sets gate_failure to the first problem found
  gate_failure=
  local now_failed new_failed state name unit port seconds command
  now_failed=$(systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | sort)
  new_failed=$(comm -13 <(printf '%s\n' "$failed_before") <(printf '%s\n' "$now_failed") \
    | grep -v '^$' | paste -sd, -)
  if [ -n "$new_failed" ]; then gate_failure="units failed: $new_failed"; return 1; fi
  state=$(systemctl is-system-running 2>/dev/null)
  if [ "$state" = degraded ] && [ "$state_before" != degraded ]; then
    gate_failure="the system is newly degraded"; return 1
  fi
  if [ -f /run/current-system/etc/nixfleet/health.tsv ]; then
    while IFS=$'\t' read -r name unit port; do
      [ -n "$name" ] || continue
      if ! systemctl is-active --quiet "$unit"; then
        gate_failure="service $name: $unit is $(systemctl is-active "$unit")"; return 1
      fi
      if [ -n "$port" ] && ! port_answers "$port"; then
        gate_failure="service $name: port $port does not answer"; return 1
      fi
    done < /run/current-system/etc/nixfleet/health.tsv
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
  local deadline=$(( $(date +%s) + health_timeout ))
  until gate_once; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 1
  done
}
