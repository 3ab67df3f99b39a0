# nixfleet's health gate, run on the host after activation (and alone: mode=health).
# Healthy means: no unit failed that was not failed before the deploy; the system is not newly
# degraded; every service the running generation declares in etc/nixfleet/health.tsv
# (NAME<TAB>UNIT<TAB>PORT lines, written by the flake's modules) is active and its port
# answers; every command check from host or group data (checks: NAME<TAB>TIMEOUT<TAB>COMMAND
# lines) exits 0 within its timeout. Everything is retried every second until health_timeout.
# What already failed before the deploy does not judge it: record_baseline notes each failed
# unit, each service the running generation declares and each command check that fails then
# ("unit NAME", "service NAME", "check NAME" lines in failing_before, which mode=health also
# takes as an argument); the gate passes over those and reports them as warnings. With
# strict_units=1 a failed unit counts whenever it failed.
gate_failure=
declare -A unjudged=()  # "KIND NAME" failing before and after: warnings, never a rollback
# Fewest systemctl calls: each is a request that the host's systemd serves, and a fleet-wide
# deploy makes them on every host at once.
failed_units() { systemctl list-units --failed --plain --no-legend 2>/dev/null | awk '{print $1}' | sort; }
port_answers() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
was_failing() { # "KIND NAME": failing before the deploy, so it does not judge it
  [ "${1%% *}" != unit ] || [ "$strict_units" != 1 ] || return 1
  grep -qxF -- "$1" <<< "$failing_before"
}
check_problem() { # NAME SECONDS COMMAND: why the check fails (nothing when it passes)
  if ! sh -n -c "$3" 2>/dev/null; then echo "check $1 is broken: its command is not valid sh"
    return; fi
  timeout "$2" sh -c "$3" >/dev/null 2>&1
  case $? in
    0) ;;
    126|127) echo "check $1 is broken: its command was not found or cannot run" ;;
    124) echo "check $1: command did not finish within $2s" ;;
    *) echo "check $1: command failed" ;;
  esac
}
problems() { # what fails now, one "KIND NAME<TAB>WHY" line each (failed units first); what
  # failed before and after is asked once
  local unit name port seconds command i problem
  while read -r unit; do
    [ -z "$unit" ] || printf 'unit %s\t%s\n' "$unit" "$unit"
  done < <(failed_units)
  if [ -f /run/current-system/etc/nixfleet/health.tsv ]; then
    local -a names=() units=() ports=() states=()
    while IFS=$'\t' read -r name unit port; do
      [ -n "$name" ] && [ -z "${unjudged[service $name]+noted}" ] || continue
      names+=("$name") units+=("$unit") ports+=("$port")
    done < /run/current-system/etc/nixfleet/health.tsv
    # One call for every service: is-active prints one state per unit, in order.
    [ ${#units[@]} -eq 0 ] || mapfile -t states < <(systemctl is-active "${units[@]}" 2>/dev/null)
    for i in "${!names[@]}"; do
      if [ "${states[i]:-unknown}" != active ]; then
        printf 'service %s\tservice %s: %s is %s\n' "${names[i]}" "${names[i]}" "${units[i]}" \
          "${states[i]:-unknown}"
      elif [ -n "${ports[i]}" ] && ! port_answers "${ports[i]}"; then
        printf 'service %s\tservice %s: port %s does not answer\n' "${names[i]}" "${names[i]}" \
          "${ports[i]}"
      fi
    done
  fi
  while IFS=$'\t' read -r name seconds command; do
    [ -n "$name" ] && [ -z "${unjudged[check $name]+noted}" ] || continue
    problem=$(check_problem "$name" "$seconds" "$command")
    [ -z "$problem" ] || printf 'check %s\t%s\n' "$name" "$problem"
  done <<< "$checks"
}
record_baseline() { # before activation: what fails already (said as failing_before lines)
  local key _
  failing_before=$(problems | cut -f1)
  while read -r key; do [ -z "$key" ] || say failing_before "$key"; done <<< "$failing_before"
}
gate_once() { # sets gate_failure to the first problem found (every new failed unit named)
  gate_failure=
  local key why new_units=
  while IFS=$'\t' read -r key why; do
    if was_failing "$key"; then unjudged[$key]=1
    elif [ "${key%% *}" = unit ]; then new_units+="${new_units:+, }${key#unit }"
    elif [ -z "$gate_failure" ]; then gate_failure=$why
    fi
  done < <(problems)
  # A unit failed now that had not failed before. (The system is degraded exactly when a unit
  # has failed, so this is also "not newly degraded".)
  [ -z "$new_units" ] || gate_failure="units failed: $new_units"
  [ -z "$gate_failure" ]
}
gate() { # retried until health_timeout; leaves the last failure in gate_failure
  local deadline=$(( EPOCHSECONDS + health_timeout ))
  until gate_once; do
    [ "$EPOCHSECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
say_unjudged() { # the warnings: what failed before this deploy and still does
  local key
  while read -r key; do
    [ -z "$key" ] || say warning "$key was failing before this deploy and still is: it does not judge this deploy"
  done < <(printf '%s\n' "${!unjudged[@]}" | sort)
}
