package changes

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"unicode/utf8"
)

// Path is an absolute guest path. It holds raw bytes: file names may contain
// newlines or invalid UTF-8. In JSON (and as a map key) a valid UTF-8 path is
// written as is; any other path is written as "b64:" + base64 of its bytes.
// Real paths start with "/", so the two forms cannot collide.
type Path string

const pathB64Prefix = "b64:"

// MarshalText implements encoding.TextMarshaler.
func (p Path) MarshalText() ([]byte, error) {
	if utf8.ValidString(string(p)) {
		return []byte(p), nil
	}
	return []byte(pathB64Prefix + base64.StdEncoding.EncodeToString([]byte(p))), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (p *Path) UnmarshalText(b []byte) error {
	s := string(b)
	if strings.HasPrefix(s, pathB64Prefix) {
		raw, err := base64.StdEncoding.DecodeString(s[len(pathB64Prefix):])
		if err != nil {
			return fmt.Errorf("decode path %q: %w", s, err)
		}
		s = string(raw)
	}
	*p = Path(s)
	return nil
}

// Display returns the path quoted when it is not plain printable text.
func (p Path) Display() string {
	s := string(p)
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// Under reports whether p is dir or below it.
func (p Path) Under(dir Path) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(string(p), string(dir)+"/")
}

// Dir returns the parent directory.
func (p Path) Dir() Path { return Path(path.Dir(string(p))) }

// FileType is the kind of a file system entry.
type FileType string

const (
	TypeFile    FileType = "file"
	TypeDir     FileType = "dir"
	TypeSymlink FileType = "symlink"
	TypeSocket  FileType = "socket"
	TypeFIFO    FileType = "fifo"
	TypeChar    FileType = "char"
	TypeBlock   FileType = "block"
	TypeOther   FileType = "other"
)

// HashState says how a regular file's SHA256 was obtained, or why not.
type HashState string

const (
	HashComputed HashState = "hashed"  // hashed in this run
	HashReused   HashState = "reused"  // inode, size, mtime, ctime matched the baseline
	HashLarge    HashState = "large"   // bigger than the hash limit: never read
	HashError    HashState = "error"   // reading failed; see HashErr
	HashNone     HashState = "missing" // vanished or not reported
)

// FileEntry is one file system entry of a manifest. Times are nanoseconds
// since the epoch.
type FileEntry struct {
	Type    FileType  `json:"t"`
	Mode    uint32    `json:"m"` // permission bits with setuid/setgid/sticky
	UID     int       `json:"u"`
	GID     int       `json:"g"`
	Size    int64     `json:"s"`
	Mtime   int64     `json:"mt"`
	Ctime   int64     `json:"ct"`
	Inode   uint64    `json:"i"`
	Nlink   int       `json:"n,omitempty"`
	Target  Path      `json:"l,omitempty"`
	SHA256  string    `json:"h,omitempty"`
	Hash    HashState `json:"hs,omitempty"`
	HashErr string    `json:"he,omitempty"`
}

// Package is one dpkg package.
type Package struct {
	Name    string `json:"name"` // ${binary:Package}: with ":arch" for Multi-Arch: same
	Version string `json:"version"`
	Status  string `json:"status"` // ${db:Status-Abbrev}, e.g. "ii", "rc"
	Arch    string `json:"arch"`
	Auto    bool   `json:"auto,omitempty"` // apt's Auto-Installed flag
}

// Installed reports whether the package is unpacked (not removed or purged).
func (p Package) Installed() bool {
	return len(p.Status) >= 2 && (p.Status[1] == 'i' || p.Status[1] == 'U' || p.Status[1] == 'F' || p.Status[1] == 'W' || p.Status[1] == 't')
}

// Unit is one systemd unit: its unit-file state and, if loaded, its runtime state.
type Unit struct {
	Name      string `json:"name"`
	FileState string `json:"file_state,omitempty"` // enabled, disabled, static, masked, ... ("" = no unit file)
	Preset    string `json:"preset,omitempty"`
	Load      string `json:"load,omitempty"`
	Active    string `json:"active,omitempty"`
	Sub       string `json:"sub,omitempty"`
}

// User is one /etc/passwd entry plus password state from /etc/shadow
// (never the hash).
type User struct {
	Name     string `json:"name"`
	UID      int    `json:"uid"`
	GID      int    `json:"gid"`
	Gecos    string `json:"gecos,omitempty"`
	Home     string `json:"home"`
	Shell    string `json:"shell"`
	Password string `json:"password,omitempty"` // empty|locked|set
	LastChg  string `json:"lastchg,omitempty"`
}

// Group is one /etc/group entry.
type Group struct {
	Name    string   `json:"name"`
	GID     int      `json:"gid"`
	Members []string `json:"members,omitempty"`
}

// Stats counts what a manifest run did.
type Stats struct {
	Entries int `json:"entries"`
	Hashed  int `json:"hashed"` // files read and hashed in this run
	Reused  int `json:"reused"` // hashes taken from the baseline index
	Large   int `json:"large"`
	Errors  int `json:"errors"`
}

// Manifest is the state of one machine at one moment.
type Manifest struct {
	Version   int      `json:"version"`
	Root      string   `json:"root"`
	HashLimit int64    `json:"hash_limit"`
	Baseline  bool     `json:"baseline"` // a baseline index was used
	Excludes  []string `json:"excludes"`

	Files map[Path]FileEntry `json:"files"`
	// Packages by Package.Name; nil when the section was skipped.
	Packages map[string]Package `json:"packages,omitempty"`
	// PackageLists holds dpkg file lists (/var/lib/dpkg/info/<pkg>.list) of
	// the packages whose list was hashed in this run: all of them in a
	// manifest without baseline, only installed or upgraded ones otherwise
	// (see Inherit).
	PackageLists map[string][]Path `json:"package_lists,omitempty"`
	Units        map[string]Unit   `json:"units,omitempty"`
	Users        map[string]User   `json:"users,omitempty"`
	Groups       map[string]Group  `json:"groups,omitempty"`
	Cron         map[Path]string   `json:"cron,omitempty"`          // crontab path -> contents
	SysctlFiles  map[Path]string   `json:"sysctl_files,omitempty"`  // sysctl.d file -> contents
	SysctlValues map[string]string `json:"sysctl_values,omitempty"` // key -> current value ("" = missing)
	Sections     map[string]bool   `json:"sections"`                // which sections were taken
	Notes        []string          `json:"notes,omitempty"`         // non-fatal problems
	Stats        Stats             `json:"stats"`
}

// BaselineIndex serialises the hashes of m for the next run's script: one
// record "<inode>:<size>:<mtime>:<ctime>\t<sha256>\0" per hashed file, keyed
// exactly as the script's `find -printf '%i:%s:%T@:%C@'`. The key has no
// path, so renamed files and hard links reuse their hash, and ctime (which no
// user can set) makes a touched-back mtime harmless. Upload it to
// BaselineIndexPath on the same machine, or on a clone of the same disk
// (clones share inodes and ctimes).
func (m *Manifest) BaselineIndex() []byte {
	seen := map[string]bool{}
	var recs []string
	for _, f := range m.Files {
		if f.Type != TypeFile || f.SHA256 == "" {
			continue
		}
		key := fmt.Sprintf("%d:%d:%s:%s", f.Inode, f.Size, findTime(f.Mtime), findTime(f.Ctime))
		if seen[key] {
			continue
		}
		seen[key] = true
		recs = append(recs, key+"\t"+f.SHA256+"\x00")
	}
	sort.Strings(recs)
	return []byte(strings.Join(recs, ""))
}

// findTime formats nanoseconds like GNU find 4.9's %T@ ("sec.nnnnnnnnn0").
func findTime(ns int64) string {
	sec, frac := ns/1e9, ns%1e9
	if frac < 0 {
		sec--
		frac += 1e9
	}
	return fmt.Sprintf("%d.%09d0", sec, frac)
}

// Inherit copies from base the package file lists that m lacks because the
// list file was unchanged (same SHA256), so that later diffs can fold the
// files of packages that are removed afterwards.
func (m *Manifest) Inherit(base *Manifest) {
	if base == nil || m.Packages == nil {
		return
	}
	if m.PackageLists == nil {
		m.PackageLists = map[string][]Path{}
	}
	for name, list := range base.PackageLists {
		if _, ok := m.PackageLists[name]; ok {
			continue
		}
		p := listPath(name)
		a, aok := m.Files[p]
		b, bok := base.Files[p]
		if aok && bok && a.SHA256 != "" && a.SHA256 == b.SHA256 {
			m.PackageLists[name] = list
		}
	}
}

func listPath(pkg string) Path { return Path("/var/lib/dpkg/info/" + pkg + ".list") }

// pathKeys: encoding/json writes map keys of string kind verbatim (invalid
// UTF-8 would be replaced), so path-keyed maps are converted explicitly.
func pathKeys[V any](m map[Path]V) map[string]V {
	if m == nil {
		return nil
	}
	out := make(map[string]V, len(m))
	for k, v := range m {
		b, _ := k.MarshalText()
		out[string(b)] = v
	}
	return out
}

func fromPathKeys[V any](m map[string]V) (map[Path]V, error) {
	if m == nil {
		return nil, nil
	}
	out := make(map[Path]V, len(m))
	for k, v := range m {
		var p Path
		if err := p.UnmarshalText([]byte(k)); err != nil {
			return nil, err
		}
		out[p] = v
	}
	return out, nil
}

type manifestAlias Manifest

type manifestJSON struct {
	*manifestAlias
	Files       map[string]FileEntry `json:"files"`
	Cron        map[string]string    `json:"cron,omitempty"`
	SysctlFiles map[string]string    `json:"sysctl_files,omitempty"`
}

// MarshalJSON keeps raw-byte paths intact (see Path).
func (m Manifest) MarshalJSON() ([]byte, error) {
	return json.Marshal(manifestJSON{manifestAlias: (*manifestAlias)(&m), Files: pathKeys(m.Files),
		Cron: pathKeys(m.Cron), SysctlFiles: pathKeys(m.SysctlFiles)})
}

// UnmarshalJSON is the inverse of MarshalJSON.
func (m *Manifest) UnmarshalJSON(b []byte) error {
	aux := manifestJSON{manifestAlias: (*manifestAlias)(m)}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	var err1, err2, err3 error
	m.Files, err1 = fromPathKeys(aux.Files)
	m.Cron, err2 = fromPathKeys(aux.Cron)
	m.SysctlFiles, err3 = fromPathKeys(aux.SysctlFiles)
	if err := errors.Join(err1, err2, err3); err != nil {
		return fmt.Errorf("decode manifest paths: %w", err)
	}
	return nil
}
