package changes

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ErrTruncated means the manifest stream ended before its trailer: the
// script was killed, or the connection dropped.
var ErrTruncated = errors.New("manifest truncated")

type fieldReader struct{ r *bufio.Reader }

func (f *fieldReader) next() (string, error) {
	b, err := f.r.ReadBytes(0)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return "", ErrTruncated
		}
		return "", err
	}
	return string(b[:len(b)-1]), nil
}

func (f *fieldReader) nextN(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		s, err := f.next()
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// ParseManifest reads the output of ManifestScript. It fails on a malformed
// or truncated stream; problems the script met on the machine (unreadable
// files, a missing dpkg-query) are recorded in the manifest instead.
func ParseManifest(r io.Reader) (*Manifest, error) {
	fr := &fieldReader{r: bufio.NewReaderSize(r, 1<<16)}
	hdr, err := fr.nextN(5)
	if err != nil {
		return nil, fmt.Errorf("read manifest header: %w", err)
	}
	if hdr[0] != "AIRLOCK-MANIFEST" || hdr[1] != "1" {
		return nil, fmt.Errorf("not an airlock manifest (header %q)", strings.Join(hdr[:2], " "))
	}
	m := &Manifest{Version: 1, Root: hdr[2], Baseline: hdr[4] == "1",
		Files: map[Path]FileEntry{}, Sections: map[string]bool{"files": true}}
	if m.HashLimit, err = strconv.ParseInt(hdr[3], 10, 64); err != nil {
		return nil, fmt.Errorf("manifest header hash limit: %w", err)
	}
	p := &parser{m: m, errs: map[Path]string{}, hashes: map[Path]string{}, reused: map[Path]bool{},
		shadow: map[string][2]string{}}
	for {
		tag, err := fr.next()
		if err != nil {
			return nil, fmt.Errorf("read manifest: %w", err)
		}
		if tag == "AIRLOCK-END" {
			break
		}
		if err := p.record(fr, tag); err != nil {
			return nil, fmt.Errorf("manifest record %s: %w", tag, err)
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

type parser struct {
	m      *Manifest
	errs   map[Path]string
	hashes map[Path]string
	reused map[Path]bool
	shadow map[string][2]string
	blobs  []blob
}

type blob struct{ section, name, data string }

func rel(p string) Path { return Path("/" + p) }

func (p *parser) record(fr *fieldReader, tag string) error {
	m := p.m
	switch tag {
	case "X":
		x, err := fr.next()
		m.Excludes = append(m.Excludes, x)
		return err
	case "F":
		f, err := fr.nextN(11)
		if err != nil {
			return err
		}
		e, err := parseEntry(f[1:])
		if err != nil {
			return fmt.Errorf("%s: %w", rel(f[0]).Display(), err)
		}
		m.Files[rel(f[0])] = e
	case "BEGIN-R", "BEGIN-H":
		return p.hashBlock(fr, tag == "BEGIN-R")
	case "E":
		f, err := fr.nextN(2)
		if err != nil {
			return err
		}
		p.errs[rel(f[0])] = f[1]
	case "SECTION":
		s, err := fr.next()
		m.Sections[s] = true
		return err
	case "B":
		f, err := fr.nextN(3)
		if err != nil {
			return err
		}
		data, err := base64.StdEncoding.DecodeString(f[2])
		if err != nil {
			return fmt.Errorf("blob %s/%s: %w", f[0], f[1], err)
		}
		p.blobs = append(p.blobs, blob{f[0], f[1], string(data)})
	case "W":
		f, err := fr.nextN(3)
		if err != nil {
			return err
		}
		p.shadow[f[0]] = [2]string{f[1], f[2]}
	case "Y":
		f, err := fr.nextN(3)
		if err != nil {
			return err
		}
		if m.SysctlValues == nil {
			m.SysctlValues = map[string]string{}
		}
		v := ""
		if f[1] == "ok" {
			v = normSpace(f[2])
		}
		m.SysctlValues[f[0]] = v
	case "S":
		f, err := fr.nextN(2)
		if err != nil {
			return err
		}
		m.Notes = append(m.Notes, f[0]+": "+strings.TrimSpace(f[1]))
	default:
		return fmt.Errorf("unknown record tag %q", tag)
	}
	return nil
}

func (p *parser) hashBlock(fr *fieldReader, reused bool) error {
	end := "END-H"
	if reused {
		end = "END-R"
	}
	for {
		rec, err := fr.next()
		if err != nil {
			return err
		}
		if rec == end {
			return nil
		}
		var sha, path string
		if reused { // key \t sha \t path
			parts := strings.SplitN(rec, "\t", 3)
			if len(parts) != 3 {
				return fmt.Errorf("bad reused-hash record %q", rec)
			}
			sha, path = parts[1], parts[2]
			p.m.Stats.Reused++
		} else { // sha "  " path
			if len(rec) < 67 || rec[64:66] != "  " {
				return fmt.Errorf("bad hash record %q", rec)
			}
			sha, path = rec[:64], rec[66:]
			p.m.Stats.Hashed++
		}
		p.hashes[rel(path)] = sha
		if reused {
			p.reused[rel(path)] = true
		}
	}
}

func parseEntry(f []string) (FileEntry, error) {
	var e FileEntry
	var err error
	e.Type = map[string]FileType{"f": TypeFile, "d": TypeDir, "l": TypeSymlink, "s": TypeSocket,
		"p": TypeFIFO, "c": TypeChar, "b": TypeBlock}[f[0]]
	if e.Type == "" {
		e.Type = TypeOther
	}
	mode, err := strconv.ParseUint(f[1], 8, 32)
	if err != nil {
		return e, fmt.Errorf("mode: %w", err)
	}
	e.Mode = uint32(mode)
	if e.UID, err = strconv.Atoi(f[2]); err != nil {
		return e, fmt.Errorf("uid: %w", err)
	}
	if e.GID, err = strconv.Atoi(f[3]); err != nil {
		return e, fmt.Errorf("gid: %w", err)
	}
	if e.Size, err = strconv.ParseInt(f[4], 10, 64); err != nil {
		return e, fmt.Errorf("size: %w", err)
	}
	if e.Mtime, err = parseFindTime(f[5]); err != nil {
		return e, fmt.Errorf("mtime: %w", err)
	}
	if e.Ctime, err = parseFindTime(f[6]); err != nil {
		return e, fmt.Errorf("ctime: %w", err)
	}
	if e.Inode, err = strconv.ParseUint(f[7], 10, 64); err != nil {
		return e, fmt.Errorf("inode: %w", err)
	}
	if e.Nlink, err = strconv.Atoi(f[8]); err != nil {
		return e, fmt.Errorf("nlink: %w", err)
	}
	e.Target = Path(f[9])
	return e, nil
}

// parseFindTime parses find's %T@ ("1700000000.1234567890") to nanoseconds.
func parseFindTime(s string) (int64, error) {
	secStr, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secStr, 10, 64)
	if err != nil {
		return 0, err
	}
	frac = (frac + "000000000")[:9]
	ns, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(secStr, "-") {
		ns = -ns
	}
	return sec*1e9 + ns, nil
}

func (p *parser) finish() error {
	m := p.m
	for path, e := range m.Files {
		m.Stats.Entries++
		if e.Type != TypeFile {
			continue
		}
		switch sha, ok := p.hashes[path]; {
		case ok:
			e.SHA256 = sha
			e.Hash = HashComputed
			if p.reused[path] {
				e.Hash = HashReused
			}
		case e.Size > m.HashLimit:
			e.Hash = HashLarge
			m.Stats.Large++
		case p.errs[path] != "":
			e.Hash, e.HashErr = HashError, p.errs[path]
			m.Stats.Errors++
		default:
			e.Hash, e.HashErr = HashNone, "not hashed (vanished during the walk?)"
			m.Stats.Errors++
		}
		m.Files[path] = e
	}
	if m.Sections["packages"] {
		m.Packages, m.PackageLists = map[string]Package{}, map[string][]Path{}
	}
	if m.Sections["services"] {
		m.Units = map[string]Unit{}
	}
	if m.Sections["users"] {
		m.Users, m.Groups = map[string]User{}, map[string]Group{}
	}
	if m.Sections["cron"] {
		m.Cron = map[Path]string{}
	}
	if m.Sections["sysctl"] {
		m.SysctlFiles = map[Path]string{}
		if m.SysctlValues == nil {
			m.SysctlValues = map[string]string{}
		}
	}
	var extStates string
	for _, b := range p.blobs {
		switch {
		case b.section == "dpkg" && b.name == "status":
			parseDpkg(m, b.data)
		case b.section == "dpkg" && b.name == "extended_states":
			extStates = b.data
		case b.section == "pkglist":
			m.PackageLists[b.name] = parseList(b.data)
		case b.section == "units" && b.name == "unit-files":
			parseUnitFiles(m, b.data)
		case b.section == "units" && b.name == "units":
			parseUnits(m, b.data)
		case b.section == "users" && b.name == "passwd":
			parsePasswd(m, b.data, p.shadow)
		case b.section == "users" && b.name == "group":
			parseGroup(m, b.data)
		case b.section == "cron":
			m.Cron[Path(b.name)] = b.data
		case b.section == "sysctl":
			m.SysctlFiles[Path(b.name)] = b.data
		default:
			return fmt.Errorf("unknown blob %s/%s", b.section, b.name)
		}
	}
	applyAuto(m, extStates)
	return nil
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func parseDpkg(m *Manifest, data string) {
	for _, l := range lines(data) {
		f := strings.Split(l, "\t")
		if len(f) < 4 || f[0] == "" {
			continue
		}
		m.Packages[f[0]] = Package{Name: f[0], Version: f[1], Status: strings.TrimSpace(f[2]), Arch: f[3]}
	}
}

func applyAuto(m *Manifest, data string) {
	for _, stanza := range strings.Split(data, "\n\n") {
		var name, arch string
		auto := false
		for _, l := range lines(stanza) {
			k, v, _ := strings.Cut(l, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "Package":
				name = v
			case "Architecture":
				arch = v
			case "Auto-Installed":
				auto = v == "1"
			}
		}
		if !auto {
			continue
		}
		for _, key := range []string{name + ":" + arch, name} {
			if pk, ok := m.Packages[key]; ok && (pk.Arch == arch || pk.Arch == "all" || arch == "") {
				pk.Auto = true
				m.Packages[key] = pk
				break
			}
		}
	}
}

func parseList(data string) []Path {
	var out []Path
	for _, l := range lines(data) {
		if l == "/." || l == "" {
			continue
		}
		out = append(out, Path(l))
	}
	return out
}

func parseUnitFiles(m *Manifest, data string) {
	for _, l := range lines(data) {
		f := strings.Fields(l)
		if len(f) < 2 || !strings.Contains(f[0], ".") {
			continue
		}
		u := m.Units[f[0]]
		u.Name, u.FileState = f[0], f[1]
		if len(f) > 2 && f[2] != "-" {
			u.Preset = f[2]
		}
		m.Units[f[0]] = u
	}
}

func parseUnits(m *Manifest, data string) {
	for _, l := range lines(data) {
		f := strings.Fields(l)
		for len(f) > 0 && (f[0] == "●" || f[0] == "*" || f[0] == "×") {
			f = f[1:]
		}
		if len(f) < 4 || !strings.Contains(f[0], ".") {
			continue
		}
		u := m.Units[f[0]]
		u.Name, u.Load, u.Active, u.Sub = f[0], f[1], f[2], f[3]
		m.Units[f[0]] = u
	}
}

func parsePasswd(m *Manifest, data string, shadow map[string][2]string) {
	for _, l := range lines(data) {
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "+") || strings.HasPrefix(l, "-") {
			continue
		}
		f := strings.Split(l, ":")
		if len(f) != 7 {
			m.Notes = append(m.Notes, fmt.Sprintf("users: malformed passwd line %q", l))
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err := errors.Join(err1, err2); err != nil {
			m.Notes = append(m.Notes, fmt.Sprintf("users: passwd line %q: %v", l, err))
			continue
		}
		sh := shadow[f[0]]
		m.Users[f[0]] = User{Name: f[0], UID: uid, GID: gid, Gecos: f[4], Home: f[5], Shell: f[6],
			Password: sh[0], LastChg: sh[1]}
	}
}

func parseGroup(m *Manifest, data string) {
	for _, l := range lines(data) {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Split(l, ":")
		if len(f) != 4 {
			m.Notes = append(m.Notes, fmt.Sprintf("users: malformed group line %q", l))
			continue
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			m.Notes = append(m.Notes, fmt.Sprintf("users: group line %q: %v", l, err))
			continue
		}
		var members []string
		for _, mem := range strings.Split(f[3], ",") {
			if mem = strings.TrimSpace(mem); mem != "" {
				members = append(members, mem)
			}
		}
		m.Groups[f[0]] = Group{Name: f[0], GID: gid, Members: members}
	}
}

func normSpace(s string) string { return strings.Join(strings.Fields(s), " ") }
