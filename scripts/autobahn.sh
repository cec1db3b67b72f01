#!/usr/bin/env bash
# RFC 6455 conformance: runs Autobahn|Testsuite's fuzzing client against a WebSocket server that is
# already listening on loopback, and prints a summary whose last line is `autobahn: N failed of M`.
# Installs the suite (CPython 2.7, from PyPI, pinned in scripts/autobahn-requirements.txt) into a
# virtualenv of its own on first use. `scripts/autobahn.sh --help` gives arguments and settings.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: scripts/autobahn.sh HOST PORT [CASES] [EXCLUDE]

Runs Autobahn|Testsuite's fuzzing client (wstest -m fuzzingclient) against the WebSocket
server listening on ws://HOST:PORT/ and prints counts by verdict and by category, each failed
case, and as its last line "autobahn: N failed of M".

  HOST     a loopback address: 127.x.y.z, localhost or ::1 (any other is refused)
  PORT     the server's TCP port
  CASES    comma-separated case ids or patterns, default "*" (e.g. "1.*,5.*" or "9.1.1")
  EXCLUDE  comma-separated ids or patterns left out, default "12.*,13.*" (permessage-deflate):
           categories 1-10, 301 cases. An empty EXCLUDE runs all 517 cases.

  scripts/autobahn.sh 127.0.0.1 9001                # categories 1-10 (301 cases)
  scripts/autobahn.sh 127.0.0.1 9001 "1.*,5.*"      # a subset
  EXCLUDE= scripts/autobahn.sh 127.0.0.1 9001       # all 517, compression included

The 12.* and 13.* cases need a server that negotiates permessage-deflate (the echo example with
--compression after its address); with AUTOBAHN_UNIMPLEMENTED=fail a server that declines them
fails instead of reporting them UNIMPLEMENTED, as CI runs it.

A case fails when its verdict is FAILED (or any verdict but OK, NON-STRICT, INFORMATIONAL and
UNIMPLEMENTED), when it never ran, or, under the strict close policy, when it passed but its
close verdict is FAILED or UNCLEAN. UNIMPLEMENTED (an extension the server does not offer) is
counted and shown, not failed, unless AUTOBAHN_UNIMPLEMENTED=fail.

Environment:
  EXCLUDE                 the EXCLUDE argument when it is not given (may be empty)
  AUTOBAHN_CLOSE_POLICY   strict (default) or lenient: only the case verdict counts
  AUTOBAHN_UNIMPLEMENTED  report (default) or fail: UNIMPLEMENTED cases count as failed
  AUTOBAHN_PATH           the request path, default /
  AUTOBAHN_TIMEOUT        seconds the whole suite may take, default 1800
  AUTOBAHN_REPORT_ROOT    the report goes to AUTOBAHN_REPORT_ROOT/<timestamp>/,
                          default /tmp/fanout-autobahn
  AUTOBAHN_VENV           the suite's virtualenv, default /opt/fanout-autobahn-py27;
                          made when missing or when the pins changed
  PY27                    the CPython 2.7 interpreter to make it with; default the newest
                          $PYENV_ROOT/versions/2.7*/bin/python2.7 (or ~/.pyenv), else
                          python2.7 on PATH
  AUTOBAHN_VERBOSE=1      show wstest's output as it runs (it always goes to wstest.log)

Exit status: 0 no case failed, 1 some case failed, 2 could not run (bad arguments, nothing
listening, no Python 2.7, setup failed, wstest crashed).
EOF
}

die() {
  echo "autobahn: $*" >&2
  exit 2
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
esac
if [ "$#" -lt 2 ] || [ "$#" -gt 4 ]; then
  usage >&2
  exit 2
fi

here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/autobahn-requirements.txt"
host="$1"
port="$2"
cases="${3:-*}"
exclude="${4-${EXCLUDE-12.*,13.*}}"
close_policy="${AUTOBAHN_CLOSE_POLICY:-strict}"
unimplemented_policy="${AUTOBAHN_UNIMPLEMENTED:-report}"
ws_path="${AUTOBAHN_PATH:-/}"
timeout_s="${AUTOBAHN_TIMEOUT:-1800}"
report_root="${AUTOBAHN_REPORT_ROOT:-/tmp/fanout-autobahn}"
venv="${AUTOBAHN_VENV:-/opt/fanout-autobahn-py27}"
verbose="${AUTOBAHN_VERBOSE:-0}"

# The suite sends fuzzed and oversized traffic: only ever at this machine.
connect_host="$host"
url_host="$host"
case "$host" in
  localhost) ;;
  ::1 | '[::1]')
    connect_host="::1"
    url_host="[::1]"
    ;;
  *)
    if [[ ! "$host" =~ ^127\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
      ((10#${BASH_REMATCH[1]} > 255 || 10#${BASH_REMATCH[2]} > 255 || 10#${BASH_REMATCH[3]} > 255)); then
      die "refusing HOST '$host': it must be a loopback address (127.0.0.0/8, localhost or ::1)"
    fi
    ;;
esac
if [[ ! "$port" =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then
  die "PORT must be a TCP port number, not '$port'"
fi
case "$close_policy" in strict | lenient) ;; *) die "AUTOBAHN_CLOSE_POLICY must be strict or lenient" ;; esac
case "$unimplemented_policy" in report | fail) ;; *) die "AUTOBAHN_UNIMPLEMENTED must be report or fail" ;; esac
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || die "AUTOBAHN_TIMEOUT must be a number of seconds"
[[ "$ws_path" == /* ]] || die "AUTOBAHN_PATH must start with /"
[ -f "$requirements" ] || die "missing $requirements"
command -v python3 >/dev/null || die "python3 is needed (for the test spec and the summary)"
command -v timeout >/dev/null || die "timeout (coreutils) is needed"
url="ws://$url_host:$port$ws_path"

check_listening() {
  python3 - "$connect_host" "$port" <<'PY'
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=5).close()
except OSError as e:
    sys.stderr.write("autobahn: nothing is listening on %s port %d (%s)\n" % (host, port, e))
    sys.exit(2)
PY
}
check_listening || exit 2

tmp="$(mktemp -d)"
report=""
trap 'rm -rf "$tmp"; [ -z "$report" ] || rmdir "$report" 2>/dev/null || true' EXIT
stamp_time="$(date -u +%Y%m%dT%H%M%SZ)"
report="$report_root/$stamp_time"
[ -e "$report" ] && report="$report-$$"
mkdir -p "$report" || die "cannot create the report directory $report"

# The fuzzing client's spec, first: a bad pattern is refused before any setup.
spec="$tmp/spec.json"
python3 - "$spec" "$url" "$report" "$cases" "$exclude" <<'PY' || exit 2
import json, re, sys

path, url, outdir, cases, exclude = sys.argv[1:]

def patterns(text, name):
    out = [p.strip() for p in text.split(",") if p.strip()]
    for p in out:
        if not re.fullmatch(r"[0-9*]+(\.[0-9*]+)*", p):
            sys.stderr.write("autobahn: bad %s pattern %r (case ids such as 9.1.1, or 1.*)\n" % (name, p))
            sys.exit(2)
    return out

spec = {
    "outdir": outdir,
    "options": {"failByDrop": False},
    "servers": [{"agent": "fanout", "url": url}],
    "cases": patterns(cases, "CASES"),
    "exclude-cases": patterns(exclude, "EXCLUDE"),
    "exclude-agent-cases": {},
}
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
PY

# --- the suite: CPython 2.7 + a virtualenv with the pinned packages ---------------------------

is_cpython27() {
  "$1" -c 'import platform, sys; sys.exit(not (sys.version_info[:2] == (2, 7) and platform.python_implementation() == "CPython"))' \
    >/dev/null 2>&1
}

find_py27() {
  if [ -n "${PY27:-}" ]; then
    is_cpython27 "$PY27" || die "PY27=$PY27 is not a working CPython 2.7 interpreter"
    echo "$PY27"
    return
  fi
  local root candidate
  for root in "${PYENV_ROOT:-}" "${HOME:+$HOME/.pyenv}"; do
    [ -n "$root" ] || continue
    while IFS= read -r candidate; do
      if [ -x "$candidate" ] && is_cpython27 "$candidate"; then
        echo "$candidate"
        return
      fi
    done < <(printf '%s\n' "$root"/versions/2.7*/bin/python2.7 | sort -rV)
  done
  if candidate="$(command -v python2.7)" && is_cpython27 "$candidate"; then
    echo "$candidate"
    return
  fi
  die "no CPython 2.7 interpreter found, and Autobahn|Testsuite runs on Python 2 only.
Looked for \$PYENV_ROOT/versions/2.7*/bin/python2.7, ~/.pyenv/versions/2.7*/bin/python2.7 and
python2.7 on PATH. Debian ships no python2 package: build one (pyenv install 2.7.18) and/or
name it with PY27=/path/to/python2.7."
}

# Makes the virtualenv with a virtualenv release that still supports Python 2.7 (< 20.22),
# installed into a temporary directory (nothing lands in a site or user directory): through
# the 2.7 interpreter's own pip when it has one, else through python3's. Then installs the pins.
# Local wheel directories (PIP_FIND_LINKS, PIP_NO_INDEX) are ignored: everything comes from PyPI.
install_suite() {
  local py="$1" tool="$tmp/virtualenv-tool"
  local -a make_venv
  if "$py" -m pip --version >/dev/null 2>&1; then
    "$py" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$tool" 'virtualenv<20.22' || return 1
    make_venv=(env "PYTHONPATH=$tool" "$py" -m virtualenv)
  else
    echo "$py has no pip: making the virtualenv with python3"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$tool" 'virtualenv<20.22' || return 1
    make_venv=(env "PYTHONPATH=$tool" python3 -m virtualenv --python "$py")
  fi
  rm -rf "$venv"
  "${make_venv[@]}" --no-download --no-periodic-update --app-data "$tmp/virtualenv-data" "$venv" ||
    return 1
  "$venv/bin/python" -m pip install --disable-pip-version-check --no-warn-script-location \
    -r "$requirements" || return 1
  "$venv/bin/wstest" --autobahnversion || return 1
}

ensure_suite() {
  local want stamp="$venv/.fanout-requirements.sha256" log="$report/setup.log" py
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  suite_ready() { [ -x "$venv/bin/wstest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; }
  suite_ready && return 0
  mkdir -p "$(dirname "$venv")" || die "cannot create $(dirname "$venv") (set AUTOBAHN_VENV)"
  # One installer at a time; a second run waits, then finds the suite ready.
  exec 9>"$venv.lock" || die "cannot write $venv.lock (set AUTOBAHN_VENV)"
  if command -v flock >/dev/null; then flock 9; fi
  if ! suite_ready; then
    py="$(find_py27)" || exit 2
    echo "autobahn: installing Autobahn|Testsuite into $venv with $py (from PyPI, once; a few minutes)"
    if ! (
      unset PIP_FIND_LINKS PIP_NO_INDEX PIP_REQUIRE_VIRTUALENV
      install_suite "$py"
    ) >"$log" 2>&1; then
      echo "autobahn: setup failed; the end of $log:" >&2
      tail -n 30 "$log" >&2
      exit 2
    fi
    echo "$want" >"$stamp"
  fi
  exec 9>&-
}
ensure_suite

# --- the case list and the run -----------------------------------------------------------------

# The suite resolves the patterns itself; its list is what "never ran" is measured against.
selected="$tmp/selected.json"
"$venv/bin/python" - "$spec" "$selected" <<'PY' || exit 2
import json, sys
from autobahntestsuite.case import Cases, CaseCategories, CaseSubCategories, CaseSetname, CaseBasename
from autobahntestsuite.caseset import CaseSet

spec = json.load(open(sys.argv[1]))
case_set = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories, CaseSubCategories)
ids = case_set.parseSpecCases(spec)
unknown = [c for c in ids if c not in case_set.CasesIndices]
if unknown:
    sys.stderr.write("autobahn: no such case: %s\n" % ", ".join(unknown))
    sys.exit(2)
if not ids:
    sys.stderr.write("autobahn: no case selected (CASES %s, EXCLUDE %s)\n"
                     % (",".join(spec["cases"]), ",".join(spec["exclude-cases"])))
    sys.exit(2)
with open(sys.argv[2], "w") as f:
    json.dump({"cases": ids, "categories": CaseCategories}, f)
PY

check_listening || exit 2
cp "$spec" "$report/spec.json"
echo "autobahn: $(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$selected") cases against $url (CASES \"$cases\", EXCLUDE \"$exclude\"); report in $report"

started="$(date +%s)"
rc=0
if [ "$verbose" = 1 ]; then
  (cd "$tmp" && PYTHONUNBUFFERED=1 timeout --kill-after=30 "$timeout_s" \
    "$venv/bin/wstest" -m fuzzingclient -s "$spec") 2>&1 | tee "$report/wstest.log" || rc=$?
else
  (cd "$tmp" && timeout --kill-after=30 "$timeout_s" \
    "$venv/bin/wstest" -m fuzzingclient -s "$spec") >"$report/wstest.log" 2>&1 || rc=$?
fi
elapsed=$(($(date +%s) - started))

timed_out=0
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  timed_out=1
  echo "autobahn: wstest did not finish within $timeout_s s (AUTOBAHN_TIMEOUT); cases without a result count as never run"
elif [ "$rc" -ne 0 ] || [ ! -f "$report/index.json" ]; then
  echo "autobahn: wstest failed (exit $rc) without a report; the end of $report/wstest.log:" >&2
  tail -n 30 "$report/wstest.log" >&2
  exit 2
fi

# --- the summary ---------------------------------------------------------------------------------

rc=0
python3 - "$report" "$selected" "$close_policy" "$unimplemented_policy" "$elapsed" "$timed_out" <<'PY' || rc=$?
import json, os, sys
from collections import Counter

report, selected_path, close_policy, unimplemented_policy, elapsed, timed_out = sys.argv[1:]
selected = json.load(open(selected_path))
ids, categories = selected["cases"], selected["categories"]
index_path = os.path.join(report, "index.json")
results = {}
if os.path.exists(index_path):
    results = json.load(open(index_path)).get("fanout", {})

PASS = ("OK", "NON-STRICT", "INFORMATIONAL")
SHOWN = PASS + ("UNIMPLEMENTED", "FAILED")
NOT_RUN = "not run"

def detail(result, key):
    """The suite's one-line explanation from the case's own JSON report."""
    try:
        with open(os.path.join(report, result["reportfile"])) as f:
            text = " ".join(str(json.load(f).get(key, "")).split())
    except (OSError, ValueError, KeyError):
        return ""
    return text if len(text) <= 150 else text[:147] + "..."

behaviors, closes = Counter(), Counter()
per_category = {}
failed, unimplemented = [], Counter()
for case in ids:
    category = case.split(".")[0]
    result = results.get(case)
    behavior = result["behavior"] if result else NOT_RUN
    close = result["behaviorClose"] if result else NOT_RUN
    behaviors[behavior] += 1
    if result:
        closes[close] += 1
    counts = per_category.setdefault(category, [Counter(), 0])
    counts[0][behavior] += 1
    if behavior == "UNIMPLEMENTED":
        unimplemented[category] += 1

    why = None
    if result is None:
        why = "never ran"
    elif behavior == "UNIMPLEMENTED":
        if unimplemented_policy == "fail":
            why = "UNIMPLEMENTED (AUTOBAHN_UNIMPLEMENTED=fail)"
    elif behavior not in PASS:
        why = "behavior %s, close %s: %s" % (behavior, close, detail(result, "result"))
        if close not in PASS:
            why += " / " + detail(result, "resultClose")
    elif close_policy == "strict" and close in ("FAILED", "UNCLEAN"):
        why = "behavior %s, close %s: %s" % (behavior, close, detail(result, "resultClose"))
    if why:
        failed.append((case, why))
        counts[1] += 1

def ordered(counter):
    """The usual verdicts first (the pass verdicts, UNIMPLEMENTED, FAILED), then any other."""
    return [k for k in SHOWN if k in counter] + sorted(k for k in counter if k not in SHOWN)

def listing(counter):
    return ", ".join("%s %d" % (k, counter[k]) for k in ordered(counter))

print("autobahn: wstest ran for %s s%s; report %s" % (
    elapsed, " and was stopped by the timeout" if timed_out == "1" else "",
    os.path.join(report, "index.html")))
everything = Counter(dict.fromkeys(SHOWN + (NOT_RUN,), 0))
everything.update(behaviors)
print("by behavior: " + listing(everything))
print("by close:    " + (listing(closes) or "-"))
print("by category:")
for category in sorted(per_category, key=int):
    counts, n_failed = per_category[category]
    name = categories.get(category, "")
    total = sum(counts.values())
    print("  %3s %-44s %4d case%s: %s%s" % (category, name, total, "" if total == 1 else "s",
                                            listing(counts), "; %d failed" % n_failed if n_failed else ""))
print("unimplemented: %d%s" % (
    sum(unimplemented.values()),
    " (%s)" % ", ".join("%s.*: %d" % (c, unimplemented[c]) for c in sorted(unimplemented, key=int)) if unimplemented else ""))
if failed:
    print("failed cases (%d):" % len(failed))
    for case, why in failed:
        print("  %-8s %s" % (case, why))
print("autobahn: %d failed of %d" % (len(failed), len(ids)))
sys.exit(1 if failed else 0)
PY
exit "$rc"
