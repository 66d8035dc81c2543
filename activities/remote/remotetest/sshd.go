// Package remotetest starts a real OpenSSH sshd on a loopback port,
// configured like an Airlock sandbox (certificate host key, trusted user
// CA, authorized principals), for tests of anything that talks to sandboxes
// over SSH. No VM is needed.
package remotetest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/activities/remote"
)

// SSHDPath is the OpenSSH server binary used.
const SSHDPath = "/usr/sbin/sshd"

// Config describes one sshd.
type Config struct {
	// CAs signs the host certificate and is the trusted user CA.
	CAs *remote.CAs
	// Principal is the login principal accepted for root (the sandbox
	// name), and by default the host certificate's principal.
	Principal string
	// HostCAs, if set, signs the host certificate instead of CAs (to test
	// a host certificate from a foreign CA).
	HostCAs *remote.CAs
	// HostPrincipals, if set, replace Principal in the host certificate.
	HostPrincipals []string
	// NoAcceptEnv leaves out the golden image's `AcceptEnv
	// AIRLOCK_EXEC_ID` (a host where Exec must fall back to `env`).
	NoAcceptEnv bool
}

// Server is a running sshd.
type Server struct {
	Addr      string // 127.0.0.1:port
	Principal string // name to dial it as (Target.Name)
	Dir       string // config, keys and log
	HostKey   []byte // host public key, authorized_keys line

	logPath     string
	noAcceptEnv bool
}

// Log returns what sshd wrote so far (it runs with -e).
func (s *Server) Log() string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no sshd log: %v)", err)
	}
	return string(data)
}

// RequireSSHD skips the test when sshd is missing, or fails it when the
// environment variable CI is "true".
func RequireSSHD(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		msg := fmt.Sprintf("OpenSSH server %s is missing (apt-get install openssh-server): %v", SSHDPath, err)
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
}

// StartSSHD starts an sshd that accepts user certificates from cas for
// principal and presents a host certificate for principal. It returns the
// address to dial and the host name to verify; the daemon is stopped in
// tb.Cleanup.
func StartSSHD(tb testing.TB, cas *remote.CAs, principal string) (addr string, hostName string) {
	tb.Helper()
	s := Start(tb, Config{CAs: cas, Principal: principal})
	return s.Addr, s.Principal
}

// Start starts an sshd as described by cfg.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	RequireSSHD(tb)
	if cfg.CAs == nil || cfg.Principal == "" {
		tb.Fatal("remotetest: Config needs CAs and Principal")
	}
	hostCAs := cfg.HostCAs
	if hostCAs == nil {
		hostCAs = cfg.CAs
	}
	hostPrincipals := cfg.HostPrincipals
	if len(hostPrincipals) == 0 {
		hostPrincipals = []string{cfg.Principal}
	}
	id, err := hostCAs.HostIdentity(hostPrincipals[0], hostPrincipals[1:])
	if err != nil {
		tb.Fatalf("remotetest: host identity: %v", err)
	}
	// sshd refuses to start without its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		tb.Fatalf("remotetest: %v", err)
	}

	dir := tb.TempDir()
	// The guest files, rooted in dir instead of /: the same layout and
	// modes the golden image gets, which exercises CAs.GuestFiles too.
	for _, f := range cfg.CAs.GuestFiles(id, cfg.Principal) {
		p := filepath.Join(dir, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			tb.Fatalf("remotetest: %v", err)
		}
		if err := os.WriteFile(p, f.Content, os.FileMode(f.Mode)); err != nil {
			tb.Fatalf("remotetest: %v", err)
		}
	}
	in := func(p string) string { return filepath.Join(dir, p) }

	s := &Server{Principal: cfg.Principal, Dir: dir, HostKey: id.PublicKey, logPath: in("sshd.log"), noAcceptEnv: cfg.NoAcceptEnv}
	// The free port can be taken between probing and sshd binding it; try
	// a few ports before giving up.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		lastErr = s.run(tb, freePort(tb), in)
		if lastErr == nil {
			return s
		}
	}
	tb.Fatalf("remotetest: sshd: %v\nsshd log:\n%s", lastErr, s.Log())
	return nil
}

func (s *Server) run(tb testing.TB, port string, in func(string) string) error {
	s.Addr = net.JoinHostPort("127.0.0.1", port)
	acceptEnv := "AcceptEnv AIRLOCK_EXEC_ID"
	if s.noAcceptEnv {
		acceptEnv = "# no AcceptEnv"
	}
	conf := strings.Join([]string{
		acceptEnv,
		"Port " + port,
		"ListenAddress 127.0.0.1",
		"HostKey " + in(remote.GuestHostKey),
		"HostCertificate " + in(remote.GuestHostCert),
		"TrustedUserCAKeys " + in(remote.GuestUserCA),
		"AuthorizedPrincipalsFile " + in(remote.GuestPrincipalsDir) + "/%u",
		"AuthorizedKeysFile none",
		"PidFile " + in("sshd.pid"),
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"MaxStartups 100",
		"LogLevel VERBOSE",
		"",
	}, "\n")
	confPath := in("sshd_config")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return err
	}

	// The log goes to a file, not a pipe: per-connection sshd children
	// inherit it, and a pipe would keep cmd.Wait waiting for them.
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", confPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies (e.g. on -timeout), take sshd with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	if err := waitForPort(s.Addr, exited); err != nil {
		stop()
		if waitErr != nil {
			err = fmt.Errorf("%w (%v)", err, waitErr)
		}
		return fmt.Errorf("on %s: %w", s.Addr, err)
	}
	tb.Cleanup(stop)
	return nil
}

func freePort(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("remotetest: find a free port: %v", err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// waitForPort polls addr until it accepts a TCP connection, backing off
// from 2 ms to 100 ms between tries. It fails at once if sshd exits, and
// gives up after 15 s (a bound on a broken setup, not a timing check).
func waitForPort(addr string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	backoff := 2 * time.Millisecond
	for {
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-exited:
			t.Stop()
			return errors.New("sshd exited before listening")
		case <-ctx.Done():
			t.Stop()
			return errors.New("sshd did not start listening")
		case <-t.C:
		}
		backoff = min(2*backoff, 100*time.Millisecond)
	}
}
