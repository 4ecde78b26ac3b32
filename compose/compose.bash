# Sourced by compose/up, wait, down and demo (after setting HERE): the stack's file and project
# name, docker-compose 1.29 or `docker compose` v2, and the services the active profiles run.
# shellcheck shell=bash
export COMPOSE_FILE=${COMPOSE_FILE:-$HERE/docker-compose.yml}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-pgha}

# docker-compose when installed (1.29 here), else the v2 plugin.
dc() {
  if command -v docker-compose >/dev/null 2>&1; then docker-compose "$@"; else docker compose "$@"; fi
}

# The services COMPOSE_PROFILES (comma-separated) runs: those without a profile and those with an
# active one. (docker-compose 1.29's `config --services` lists every service, and naming a
# service on the command line would start it whatever its profile.)
active_services() {
  dc config | awk -v active=",${COMPOSE_PROFILES:-}," '
    function flush(   n, i, p) {
      if (name == "") return
      if (profiles == "") { print name; return }
      n = split(profiles, p, ",")
      for (i = 1; i <= n; i++) if (p[i] != "" && index(active, "," p[i] ",")) { print name; return }
    }
    /^services:/ { in_services = 1; next }
    in_services && /^[^ ]/ { in_services = 0 }
    !in_services { next }
    /^  [^ -][^:]*:$/ { flush(); name = substr($1, 1, length($1) - 1); profiles = ""; in_profiles = 0; next }
    /^    profiles:/ { in_profiles = 1; next }
    in_profiles && /^ *- / { profiles = profiles "," $2; next }
    { in_profiles = 0 }
    END { flush() }'
}
