package remote_test

import (
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/activities/remote"
)

func TestPathPolicy(t *testing.T) {
	policy := remote.DefaultPathPolicy()

	allowed := map[string]string{
		"/etc/nginx/nginx.conf":           "/etc/nginx/nginx.conf",
		"/etc":                            "/etc",
		"/etc//hosts":                     "/etc/hosts",
		"/etc/./nginx/../hosts":           "/etc/hosts",
		"/var/www/html/index.html":        "/var/www/html/index.html",
		"/var/lib/airlock-agent/state":    "/var/lib/airlock-agent/state",
		"/etc/ssh/sshd_config":            "/etc/ssh/sshd_config",
		"/etc/shadow.d/x":                 "/etc/shadow.d/x", // component match, not string prefix
		"/home/alice/.bashrc":             "/home/alice/.bashrc",
		"/usr/local/bin/tool":             "/usr/local/bin/tool",
		"/opt/app/../app/config.yml":      "/opt/app/config.yml",
		"/root/.profile":                  "/root/.profile",
		"/srv/data/file":                  "/srv/data/file",
		"/etc/ssh/airlock-not-really/foo": "/etc/ssh/airlock-not-really/foo",
	}
	for in, want := range allowed {
		got, err := policy.Check(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}

	denied := map[string]string{
		"etc/hosts":                         "relative",
		"./etc/hosts":                       "relative",
		"":                                  "empty",
		"/etc/hosts\x00x":                   "NUL",
		"/etc/shadow":                       `denied by rule "/etc/shadow"`,
		"/etc/gshadow":                      `denied by rule "/etc/gshadow"`,
		"/etc/ssh/airlock/user_ca.pub":      `denied by rule "/etc/ssh/airlock"`,
		"/etc/ssh/airlock":                  `denied by rule "/etc/ssh/airlock"`,
		"/etc/../etc/ssh/airlock/principal": `denied by rule "/etc/ssh/airlock"`,
		"/var/www/../../etc/shadow":         `/etc/shadow (cleaned from "/var/www/../../etc/shadow") is denied`,
		"/etc/../../../proc/self/environ":   `denied by rule "/proc"`,
		"/sys/kernel":                       `denied by rule "/sys"`,
		"/dev/sda":                          `denied by rule "/dev"`,
		"/boot/vmlinuz":                     `denied by rule "/boot"`,
		"/usr/bin/ls":                       "not under any allowed prefix",
		"/etcetera/x":                       "not under any allowed prefix",
		"/":                                 "not under any allowed prefix",
		"/var/wwwx":                         "not under any allowed prefix",
	}
	for in, msg := range denied {
		_, err := policy.Check(in)
		require.ErrorIs(t, err, remote.ErrPathPolicy, in)
		require.ErrorContains(t, err, msg, in)
	}
}

func TestFiles(t *testing.T) {
	ctx := context.Background()

	t.Run("WriteThenReadRoundTrip", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		p := filepath.Join(dir, "sub dir", "it's ünïcode.conf")
		content := []byte("line 1\n$HOME `x` 'q' \"dq\"\nno trailing newline")
		require.NoError(t, client.WriteFile(ctx, p, content, 0o640, "nobody", "nogroup"))

		got, err := client.ReadFile(ctx, p)
		require.NoError(t, err)
		require.Equal(t, content, got)

		info, err := os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o640), info.Mode().Perm())
		requireOwner(t, p, "nobody", "nogroup")

		// Overwrite: atomic replace, defaults root:root 0644, no temp files left.
		require.NoError(t, client.WriteFile(ctx, p, []byte("v2"), 0, "", ""))
		got, err = client.ReadFile(ctx, p)
		require.NoError(t, err)
		require.Equal(t, "v2", string(got))
		info, err = os.Stat(p)
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o644), info.Mode().Perm())
		requireOwner(t, p, "root", "root")
		entries, err := os.ReadDir(filepath.Dir(p))
		require.NoError(t, err)
		require.Len(t, entries, 1, "no temp files left")
	})

	t.Run("BinaryAndEmptyContent", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		blob := make([]byte, 256<<10)
		_, _ = rand.Read(blob)
		require.NoError(t, client.WriteFile(ctx, dir+"/blob", blob, 0o600, "root", "root"))
		got, err := client.ReadFile(ctx, dir+"/blob")
		require.NoError(t, err)
		require.Equal(t, blob, got)

		require.NoError(t, client.WriteFile(ctx, dir+"/empty", nil, 0o644, "", ""))
		got, err = client.ReadFile(ctx, dir+"/empty")
		require.NoError(t, err)
		require.Empty(t, got)
	})

	t.Run("SpecialModeBits", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		require.NoError(t, client.WriteFile(ctx, dir+"/suid", []byte("#!/bin/sh\n"), 0o755|os.ModeSetuid, "", ""))
		require.NoError(t, client.WriteFile(ctx, dir+"/raw", []byte("x"), os.FileMode(0o2750), "", ""))
		st := run(t, client, "stat -c '%a' "+dir+"/suid "+dir+"/raw")
		require.Equal(t, "4755\n2750\n", st.Stdout.String())
	})

	t.Run("PolicyEnforced", func(t *testing.T) {
		client, _ := setup(t)
		_, err := client.ReadFile(ctx, "/etc/shadow")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
		require.ErrorContains(t, err, "/etc/shadow")
		err = client.WriteFile(ctx, "/etc/ssh/airlock/principals/root", []byte("x"), 0o644, "", "")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
		_, err = client.ReadFile(ctx, "relative/path")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
		_, err = client.ReadFile(ctx, "/tmp/../proc/self/environ")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
	})

	t.Run("SymlinkToDeniedPathRefused", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		require.NoError(t, os.Symlink("/etc/shadow", dir+"/innocent"))
		require.NoError(t, os.Symlink("/proc/self", dir+"/procdir"))

		_, err := client.ReadFile(ctx, dir+"/innocent")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
		require.ErrorContains(t, err, "resolves through a symlink to /etc/shadow")
		err = client.WriteFile(ctx, dir+"/innocent", []byte("x"), 0o644, "", "")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
		_, err = client.ReadFile(ctx, dir+"/procdir/environ")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
	})

	t.Run("SymlinkToAllowedPathFollowed", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(dir+"/real", []byte("old"), 0o644))
		require.NoError(t, os.Symlink("real", dir+"/link"))
		require.NoError(t, client.WriteFile(ctx, dir+"/link", []byte("new"), 0o644, "", ""))
		got, err := client.ReadFile(ctx, dir+"/link")
		require.NoError(t, err)
		require.Equal(t, "new", string(got))
		target, err := os.Readlink(dir + "/link")
		require.NoError(t, err)
		require.Equal(t, "real", target, "the link itself stays a link")
	})

	t.Run("MissingFile", func(t *testing.T) {
		client, _ := setup(t)
		_, err := client.ReadFile(ctx, t.TempDir()+"/nope")
		require.ErrorIs(t, err, fs.ErrNotExist)
	})

	t.Run("NotRegularFile", func(t *testing.T) {
		client, _ := setup(t)
		_, err := client.ReadFile(ctx, t.TempDir())
		require.ErrorContains(t, err, "not a regular file")
		err = client.WriteFile(ctx, t.TempDir(), []byte("x"), 0o644, "", "")
		require.Error(t, err)
	})

	t.Run("ReadCap", func(t *testing.T) {
		_, bundle := setup(t)
		d := &remote.Dialer{CAs: bundle.cas, MaxReadBytes: 1000}
		client, err := d.Dial(ctx, bundle.target)
		require.NoError(t, err)
		defer client.Close()
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(dir+"/small", make([]byte, 1000), 0o644))
		require.NoError(t, os.WriteFile(dir+"/big", make([]byte, 1001), 0o644))
		got, err := client.ReadFile(ctx, dir+"/small")
		require.NoError(t, err)
		require.Len(t, got, 1000)
		_, err = client.ReadFile(ctx, dir+"/big")
		require.ErrorIs(t, err, remote.ErrTooLarge)
		require.ErrorContains(t, err, "1001 bytes")
	})

	t.Run("BadOwner", func(t *testing.T) {
		client, _ := setup(t)
		dir := t.TempDir()
		err := client.WriteFile(ctx, dir+"/f", []byte("x"), 0o644, "no-such-user-xyz", "")
		require.ErrorContains(t, err, "no-such-user-xyz")
		err = client.WriteFile(ctx, dir+"/f", []byte("x"), 0o644, "root:root", "")
		require.ErrorContains(t, err, "invalid owner")
		st := run(t, client, "ls -A "+dir)
		require.Empty(t, st.Stdout.String(), "no file or temp file left behind")
	})

	t.Run("CustomPolicy", func(t *testing.T) {
		_, bundle := setup(t)
		dir := t.TempDir()
		d := &remote.Dialer{CAs: bundle.cas, Policy: &remote.PathPolicy{Allow: []string{dir}}}
		client, err := d.Dial(ctx, bundle.target)
		require.NoError(t, err)
		defer client.Close()
		require.NoError(t, client.WriteFile(ctx, dir+"/ok", []byte("x"), 0o644, "", ""))
		err = client.WriteFile(ctx, "/tmp/elsewhere", []byte("x"), 0o644, "", "")
		require.ErrorIs(t, err, remote.ErrPathPolicy)
	})
}

func requireOwner(t *testing.T, p, owner, group string) {
	t.Helper()
	info, err := os.Stat(p)
	require.NoError(t, err)
	st := info.Sys().(*syscall.Stat_t)
	u, err := user.LookupId(strconv.Itoa(int(st.Uid)))
	require.NoError(t, err)
	g, err := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	require.NoError(t, err)
	require.Equal(t, owner+":"+group, u.Username+":"+g.Name)
}
