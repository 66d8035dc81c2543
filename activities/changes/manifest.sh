# Airlock manifest script (format version 1).
#
# ManifestScript prepends the AIRLOCK_* configuration as shell assignments and
# the caller sends the whole text to `bash -s` as root. The output is ONE
# stream of NUL-terminated fields; every record starts with a fixed tag, so
# the stream is safe for any byte in a file name (newline, tab, invalid
# UTF-8). Records (fields separated by NUL):
#
#   AIRLOCK-MANIFEST 1 <root> <hash-limit> <baseline 0|1>  header
#   X <exclude-pattern>                                     one per exclusion
#   F <path> <type> <mode> <uid> <gid> <size> <mtime> <ctime> <inode> <nlink> <link>
#                                                           one per entry, path
#                                                           relative to root
#   BEGIN-R {<inode:size:mtime:ctime>\t<sha256>\t<path>} END-R
#                                                           hashes reused from
#                                                           the baseline index
#   BEGIN-H {<sha256>  <path>} END-H                        hashes computed now
#   E <path> <message>                                      file not hashable
#   B <section> <name> <base64 content>                     text blobs
#   W <user> <password-state> <lastchg>                     from /etc/shadow
#   Y <sysctl key> <ok|missing> <current value>
#   SECTION <name>                                          a section follows
#   S <section> <message>                                   non-fatal problems
#   AIRLOCK-END                                             trailer: stream complete
#
# Nothing here aborts on a bad file: errors become E or S records.
set -u
export LC_ALL=C
umask 077
TAB=$'\t'
out() { printf '%s\0' "$@"; }

W=$(mktemp -d /tmp/airlock-manifest.XXXXXX) || { echo "airlock-manifest: mktemp failed" >&2; exit 2; }
trap 'rm -rf -- "$W"' EXIT

# blob SECTION NAME FILE: emit FILE base64-encoded, or an S record if unreadable.
blob() {
	if cat -- "$3" > "$W/blob" 2>/dev/null; then
		printf 'B\0%s\0%s\0' "$1" "$2"
		base64 -w0 < "$W/blob"
		printf '\0'
	else
		out S "$1" "$2: unreadable"
	fi
}

cd -- "$AIRLOCK_ROOT" || { echo "airlock-manifest: cannot enter root $AIRLOCK_ROOT" >&2; exit 2; }
AIRLOCK_ROOT=$(pwd -P)

# Baseline index: records "<inode:size:mtime:ctime>\t<sha256>\0", written by
# Manifest.BaselineIndex. A file whose key is unchanged keeps its old hash.
have_base=0
: > "$W/base"
if [ -n "$AIRLOCK_BASELINE" ] && [ -f "$AIRLOCK_BASELINE" ]; then
	sort -z -t "$TAB" -k1,1 -- "$AIRLOCK_BASELINE" > "$W/base" && have_base=1
fi

out AIRLOCK-MANIFEST 1 "$AIRLOCK_ROOT" "$AIRLOCK_HASH_LIMIT" "$have_base"

# ---- files -----------------------------------------------------------------
prune=()
for x in "${AIRLOCK_EXCLUDES[@]}"; do
	out X "$x"
	x=${x%/}
	[ -n "$x" ] || continue
	prune+=( -path ".$x" -o )
done
if [ ${#prune[@]} -gt 0 ]; then
	unset 'prune[-1]'
	prune=( '(' "${prune[@]}" ')' -prune -o )
fi
# -P (the default) never follows symlinks, so loops cannot hang the walk.
# Regular files up to the hash limit are also written to the candidate list;
# bigger ones (a 1 GiB sparse file) are never opened.
find -P . -xdev "${prune[@]}" \
	-printf 'F\0%P\0%y\0%m\0%U\0%G\0%s\0%T@\0%C@\0%i\0%n\0%l\0' \
	'(' -type f -size "-$((AIRLOCK_HASH_LIMIT + 1))c" -fprintf "$W/cand" '%i:%s:%T@:%C@\t%P\0' ')' \
	2> "$W/find.err"
st=$?
if [ $st -ne 0 ] || [ -s "$W/find.err" ]; then
	out S files "find exit $st: $(head -c 2000 "$W/find.err")"
fi

# ---- hashes ----------------------------------------------------------------
sort -z -t "$TAB" -k1,1 "$W/cand" > "$W/cand.s"
out BEGIN-R
join -z -t "$TAB" --nocheck-order "$W/base" "$W/cand.s"
out END-R
join -z -t "$TAB" --nocheck-order -v 2 "$W/base" "$W/cand.s" | cut -z -f2- > "$W/tohash"
out BEGIN-H
xargs -0 -r sha256sum -z -- < "$W/tohash" 2> "$W/hash.err" | tee "$W/hashed"
st=${PIPESTATUS[0]}
out END-H
if [ "$st" -ne 0 ] || [ -s "$W/hash.err" ]; then
	# Find exactly which files failed and record each one's own error.
	sed -z 's/^[0-9a-f]\{64\}  //' "$W/hashed" | sort -z > "$W/hashed.p"
	sort -z "$W/tohash" > "$W/tohash.s"
	comm -z -23 "$W/tohash.s" "$W/hashed.p" > "$W/failed"
	while IFS= read -r -d '' p; do
		msg=$(sha256sum -- "$p" 2>&1 >/dev/null)
		out E "$p" "${msg:-read failed}"
	done < "$W/failed"
fi

# ---- packages ----------------------------------------------------------------
if [ "$AIRLOCK_PACKAGES" = 1 ]; then
	out SECTION packages
	if [ ! -f var/lib/dpkg/status ]; then
		out S dpkg "no dpkg database at /var/lib/dpkg/status"
	elif dpkg-query --admindir="$AIRLOCK_ROOT/var/lib/dpkg" -W \
		-f '${binary:Package}\t${Version}\t${db:Status-Abbrev}\t${Architecture}\n' \
		> "$W/dpkg" 2> "$W/dpkg.err"; then
		blob dpkg status "$W/dpkg"
	else
		out S dpkg "dpkg-query: $(head -c 2000 "$W/dpkg.err")"
	fi
	[ -f var/lib/apt/extended_states ] && blob dpkg extended_states var/lib/apt/extended_states
	# File lists only for packages whose .list was (re)hashed in this run: all
	# of them without a baseline, only installed/upgraded ones with one.
	grep -z -E '^var/lib/dpkg/info/[^/]+\.list$' "$W/tohash" > "$W/lists"
	while IFS= read -r -d '' p; do
		n=${p##*/}
		blob pkglist "${n%.list}" "$p"
	done < "$W/lists"
fi

# ---- services ----------------------------------------------------------------
if [ "$AIRLOCK_SERVICES" = 1 ]; then
	out SECTION services
	if "${AIRLOCK_SYSTEMCTL[@]}" list-unit-files --no-legend --no-pager --full > "$W/uf" 2> "$W/uf.err"; then
		blob units unit-files "$W/uf"
	else
		out S units "list-unit-files: $(head -c 2000 "$W/uf.err")"
	fi
	if "${AIRLOCK_SYSTEMCTL[@]}" list-units --all --no-legend --no-pager --full --plain > "$W/ul" 2> "$W/ul.err"; then
		blob units units "$W/ul"
	else
		out S units "list-units: $(head -c 2000 "$W/ul.err")"
	fi
fi

# ---- users and groups ----------------------------------------------------------
if [ "$AIRLOCK_USERS" = 1 ]; then
	out SECTION users
	blob users passwd etc/passwd
	blob users group etc/group
	# Never the password hashes: only whether one is set, and when it changed.
	if [ -f etc/shadow ]; then
		while IFS=: read -r u pw lastchg _; do
			case $pw in
			'') s=empty ;;
			'!'*|'*'*) s=locked ;;
			*) s=set ;;
			esac
			out W "$u" "$s" "$lastchg"
		done < etc/shadow
	fi
fi

# ---- cron ----------------------------------------------------------------------
if [ "$AIRLOCK_CRON" = 1 ]; then
	out SECTION cron
	for f in etc/crontab etc/cron.d/* var/spool/cron/crontabs/*; do
		[ -f "$f" ] && blob cron "/$f" "$f"
	done
fi

# ---- sysctl --------------------------------------------------------------------
if [ "$AIRLOCK_SYSCTL" = 1 ]; then
	out SECTION sysctl
	: > "$W/keys"
	for f in etc/sysctl.d/*.conf etc/sysctl.conf; do
		[ -f "$f" ] || continue
		blob sysctl "/$f" "$f"
		while IFS= read -r line || [ -n "$line" ]; do
			line=${line#"${line%%[![:space:]]*}"}
			case $line in '' | '#'* | ';'*) continue ;; *=*) ;; *) continue ;; esac
			k=${line%%=*}
			k=${k%"${k##*[![:space:]]}"}
			k=${k#-}
			[ -n "$k" ] && printf '%s\0' "$k" >> "$W/keys"
		done < "$f"
	done
	sort -zu "$W/keys" > "$W/keys.s"
	while IFS= read -r -d '' k; do
		case $k in */*) p=$k ;; *) p=${k//./\/} ;; esac
		v=
		if [ -r "$AIRLOCK_PROCSYS/$p" ] && IFS= read -r -d '' v < "$AIRLOCK_PROCSYS/$p" || [ -n "$v" ]; then
			out Y "$k" ok "$v"
		else
			out Y "$k" missing ""
		fi
	done < "$W/keys.s"
fi

out AIRLOCK-END
