// Package storetest gives tests a real PostgreSQL database: no mocks.
//
// Start returns a fresh database per test in the shared private cluster:
// the server named by $AIRLOCK_TEST_PG_URL (any database there; the user
// must be allowed to CREATE DATABASE), or, when that is unset, the dev
// cluster that deploy/dev/postgres.sh starts under .data/pg on
// 127.0.0.1:55432. NewCluster starts a separate cluster that one test owns
// and may stop and start (failure tests).
//
// Without PostgreSQL server binaries a test is skipped, or fails when
// CI=true.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var shared struct {
	sync.Mutex
	dsn string
}

// Start creates an empty database for t and returns its DSN. The database
// is dropped (WITH FORCE) when t ends; close your pools in t.Cleanup first.
func Start(t testing.TB) string {
	t.Helper()
	admin := sharedDSN(t)
	name := "test_" + randomHex(t, 8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, admin, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("storetest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("storetest: drop database %s: %v", name, err)
		}
	})
	return withDatabase(admin, name)
}

func sharedDSN(t testing.TB) string {
	t.Helper()
	if dsn := os.Getenv("AIRLOCK_TEST_PG_URL"); dsn != "" {
		return dsn
	}
	shared.Lock()
	defer shared.Unlock()
	if shared.dsn == "" {
		requireBinaries(t)
		run(t, nil, "start") // idempotent; flock serialises parallel packages
		dsn := strings.TrimSpace(run(t, nil, "url"))
		waitReady(t, dsn)
		shared.dsn = dsn
	}
	return shared.dsn
}

// Cluster is a private PostgreSQL cluster owned by one test, with its own
// data dir under t.TempDir() and its own port. It is stopped at cleanup.
type Cluster struct {
	Dir  string // data directory
	Port int
	DSN  string // the "airlock" database
	env  []string
}

// NewCluster initialises and starts a cluster for t (initdb takes ~2 s).
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	requireBinaries(t)
	base := t.TempDir()
	makeTraversable(t, base)
	c := &Cluster{Dir: filepath.Join(base, "pg"), Port: freePort(t)}
	c.env = []string{"AIRLOCK_PG_DIR=" + c.Dir, fmt.Sprintf("AIRLOCK_PG_PORT=%d", c.Port)}
	c.DSN = strings.TrimSpace(run(t, c.env, "url"))
	t.Cleanup(func() {
		if out, err := script(c.env, "stop"); err != nil {
			t.Logf("storetest: stop cluster %s: %v\n%s", c.Dir, err, out)
		}
	})
	c.Start(t)
	return c
}

// Start starts the cluster (a no-op when running) and waits until it
// accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	run(t, c.env, "start")
	waitReady(t, c.DSN)
}

// Stop shuts the cluster down (pg_ctl stop -m fast, waits until it is down).
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	run(t, c.env, "stop")
}

// requireBinaries skips (or, with CI=true, fails) when the PostgreSQL
// server binaries are missing.
func requireBinaries(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("initdb"); err == nil {
		return
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		return
	}
	msg := "storetest: PostgreSQL server binaries (initdb, pg_ctl) not found: " +
		"apt-get install postgresql, or set AIRLOCK_TEST_PG_URL"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func scriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "dev", "postgres.sh")
}

func script(env []string, arg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, scriptPath(), arg)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), fmt.Errorf("postgres.sh %s: %w: %s", arg, err, ee.Stderr)
	}
	return string(out), err
}

func run(t testing.TB, env []string, arg string) string {
	t.Helper()
	out, err := script(env, arg)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return out
}

// waitReady polls until dsn accepts a query, backing off from 10 ms.
func waitReady(t testing.TB, dsn string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for wait := 10 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := adminExec(ctx, dsn, "SELECT 1")
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("storetest: %s not ready: %v", dsn, err)
		}
		time.Sleep(wait)
	}
}

func adminExec(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns dsn pointing at database name.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name // key=value form: the last value wins
}

// makeTraversable lets the postgres user reach dir when we run as root:
// t.TempDir's directories are 0700.
func makeTraversable(t testing.TB, dir string) {
	if os.Geteuid() != 0 {
		return
	}
	stop := filepath.Clean(os.TempDir())
	if !strings.HasPrefix(dir, stop+string(filepath.Separator)) {
		stop = filepath.Dir(dir) // not under TMPDIR: touch dir only
	}
	for d := filepath.Clean(dir); d != stop && d != filepath.Dir(d); d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatalf("storetest: %v", err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
			t.Fatalf("storetest: %v", err)
		}
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("storetest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return hex.EncodeToString(b)
}
