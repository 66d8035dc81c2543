package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// DefaultMaxReadBytes caps ReadFile unless the Dialer sets another cap.
const DefaultMaxReadBytes = 8 << 20

// fileOpTimeout bounds one ReadFile or WriteFile.
const fileOpTimeout = 2 * time.Minute

// PathPolicy decides which absolute paths the file tools may touch. A path
// is allowed when it lies under an Allow prefix and under no Deny prefix;
// prefixes match whole path components (/etc matches /etc/hosts, not
// /etcetera).
type PathPolicy struct {
	Allow []string
	Deny  []string
}

// DefaultPathPolicy allows the places where configuration and application
// files live, and denies Airlock's own SSH identity, password hashes and
// kernel or device trees.
func DefaultPathPolicy() PathPolicy {
	return PathPolicy{
		Allow: []string{
			"/etc", "/usr/local", "/opt", "/srv", "/var/www", "/home", "/root",
			"/var/lib/airlock-agent", "/var/log", "/tmp",
		},
		Deny: []string{
			"/etc/ssh/airlock", "/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-",
			"/proc", "/sys", "/dev", "/boot",
		},
	}
}

// Check returns the cleaned path if the policy allows p, or an error
// wrapping ErrPathPolicy that names the path and the rule.
func (pp PathPolicy) Check(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%w: empty path", ErrPathPolicy)
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("%w: path %q contains a NUL byte", ErrPathPolicy, p)
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("%w: path %q is relative; an absolute path is required", ErrPathPolicy, p)
	}
	clean := path.Clean(p)
	for _, d := range pp.Deny {
		if underPrefix(clean, d) {
			return "", fmt.Errorf("%w: %s is denied by rule %q", ErrPathPolicy, describe(p, clean), d)
		}
	}
	for _, a := range pp.Allow {
		if underPrefix(clean, a) {
			return clean, nil
		}
	}
	return "", fmt.Errorf("%w: %s is not under any allowed prefix (%s)", ErrPathPolicy, describe(p, clean), strings.Join(pp.Allow, ", "))
}

func describe(p, clean string) string {
	if p == clean {
		return clean
	}
	return fmt.Sprintf("%s (cleaned from %q)", clean, p)
}

func underPrefix(p, prefix string) bool {
	prefix = path.Clean("/" + prefix)
	if prefix == "/" {
		return true
	}
	return p == prefix || strings.HasPrefix(p, prefix+"/")
}

// Exit codes of the file scripts, chosen to be distinct from what the
// coreutils they run return.
const (
	exitResolved   = 93 // path resolves elsewhere through a symlink; stdout has the target
	exitTooLarge   = 94
	exitNotRegular = 95
	exitNotExist   = 96
)

// readScript prints the file at $1 if it is a regular file of at most $2
// bytes and its path contains no symlink.
const readScript = `set -u
p=$1 max=$2
r=$(realpath -e -- "$p" 2>/dev/null) || { echo "no such file: $p" >&2; exit 96; }
if [ "$r" != "$p" ]; then printf '%s' "$r"; exit 93; fi
[ -f "$p" ] || { echo "not a regular file: $p" >&2; exit 95; }
size=$(stat -c %s -- "$p") || exit 1
if [ "$size" -gt "$max" ]; then echo "$size" >&2; exit 94; fi
exec head -c "$((max + 1))" -- "$p"`

// writeScript replaces the file at $1 atomically with stdin: a temporary
// file in the same directory gets owner $3:$4 and mode $2, then is renamed
// over the target. Parent directories are created.
const writeScript = `set -eu
p=$1 mode=$2 owner=$3 group=$4
r=$(realpath -m -- "$p")
if [ "$r" != "$p" ]; then printf '%s' "$r"; exit 93; fi
d=${p%/*}
[ -n "$d" ] || d=/
mkdir -p -- "$d"
t=$(mktemp -- "$d/.airlock-write.XXXXXXXX")
trap 'rm -f -- "$t"' EXIT
cat > "$t"
chown -- "$owner:$group" "$t"
chmod -- "$mode" "$t"
mv -fT -- "$t" "$p"
trap - EXIT`

// ReadFile returns the content of the file at p, as root. p must pass the
// client's PathPolicy, both as given and after symlinks are resolved. Files
// larger than the read cap fail with ErrTooLarge; a missing file with an
// error wrapping fs.ErrNotExist.
func (c *Client) ReadFile(ctx context.Context, p string) ([]byte, error) {
	var content []byte
	err := c.withResolvedPath(p, func(clean string) (int, string, error) {
		out := &limitedBuffer{max: c.maxRead + 1}
		errBuf := &limitedBuffer{max: 4096}
		res, err := c.run(ctx, sessionSpec{
			command: "bash -c " + shellQuote(readScript) + " airlock-read " + shellQuote(clean) + " " + strconv.FormatInt(c.maxRead, 10),
			stdin:   bytes.NewReader(nil),
			stdout:  out, stderr: errBuf,
			timeout: fileOpTimeout,
		})
		if err != nil {
			return 0, "", err
		}
		data, _ := out.bytes()
		errText, _ := errBuf.bytes()
		switch res.exitCode {
		case 0:
			if int64(len(data)) > c.maxRead {
				return 0, "", fmt.Errorf("%w: %s grew beyond %d bytes while being read", ErrTooLarge, clean, c.maxRead)
			}
			content = data
		case exitResolved:
			return exitResolved, string(data), nil
		case exitTooLarge:
			return 0, "", fmt.Errorf("%w: %s has %s bytes, cap is %d", ErrTooLarge, clean, strings.TrimSpace(string(errText)), c.maxRead)
		case exitNotExist:
			return 0, "", fmt.Errorf("%s: %w", clean, fs.ErrNotExist)
		default:
			return 0, "", fmt.Errorf("exit %d: %s", res.exitCode, strings.TrimSpace(string(errText)))
		}
		return 0, "", nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s on %s: %w", p, c.name, err)
	}
	return content, nil
}

// WriteFile atomically replaces the file at p with content, as root, then
// sets owner, group (empty means root) and mode (0 means 0644). Setuid,
// setgid and sticky bits in mode are honoured. Parent directories are
// created. A symlink at p is followed, and its target must pass the policy.
func (c *Client) WriteFile(ctx context.Context, p string, content []byte, mode os.FileMode, owner, group string) error {
	if owner == "" {
		owner = "root"
	}
	if group == "" {
		group = "root"
	}
	for _, name := range []string{owner, group} {
		if strings.ContainsAny(name, ": \t\n\x00") {
			return fmt.Errorf("write %s on %s: invalid owner or group %q", p, c.name, name)
		}
	}
	modeStr := octalMode(mode)
	err := c.withResolvedPath(p, func(clean string) (int, string, error) {
		out := &limitedBuffer{max: 4096}
		errBuf := &limitedBuffer{max: 4096}
		res, err := c.run(ctx, sessionSpec{
			command: "bash -c " + shellQuote(writeScript) + " airlock-write " +
				strings.Join([]string{shellQuote(clean), modeStr, shellQuote(owner), shellQuote(group)}, " "),
			stdin:  bytes.NewReader(content),
			stdout: out, stderr: errBuf,
			timeout: fileOpTimeout,
		})
		if err != nil {
			return 0, "", err
		}
		data, _ := out.bytes()
		errText, _ := errBuf.bytes()
		switch res.exitCode {
		case 0:
			return 0, "", nil
		case exitResolved:
			return exitResolved, string(data), nil
		default:
			return 0, "", fmt.Errorf("exit %d: %s", res.exitCode, strings.TrimSpace(string(errText)))
		}
	})
	if err != nil {
		return fmt.Errorf("write %s on %s: %w", p, c.name, err)
	}
	return nil
}

// withResolvedPath checks p against the policy and runs op on the cleaned
// path. When op reports that the path resolves elsewhere through a symlink,
// the target is checked too and op runs once more on it.
func (c *Client) withResolvedPath(p string, op func(clean string) (code int, resolved string, err error)) error {
	clean, err := c.policy.Check(p)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < 2; attempt++ {
		code, resolved, err := op(clean)
		if err != nil || code != exitResolved {
			return err
		}
		target, err := c.policy.Check(resolved)
		if err != nil {
			return fmt.Errorf("%s resolves through a symlink to %s: %w", clean, resolved, err)
		}
		if target == clean {
			break
		}
		clean = target
	}
	return errors.New("path keeps resolving elsewhere (symlinks changing?)")
}

func octalMode(m os.FileMode) string {
	if m == 0 {
		m = 0o644
	}
	// Accept both Go's mode bits and raw Unix ones (0o4755 from JSON).
	bits := uint32(m.Perm()) | uint32(m)&0o7000
	if m&os.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		bits |= 0o1000
	}
	return fmt.Sprintf("%04o", bits)
}
