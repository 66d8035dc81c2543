package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

// The demo's production VM. Its MAC has a static DHCP reservation on the
// airlock-prod network (deploy/host/airlock-prod.xml).
const (
	prodName    = "prod-web-1"
	prodMAC     = "52:54:00:78:00:0a"
	prodIP      = "10.78.0.10"
	prodNetwork = "airlock-prod"
)

// prodCmd manages prod-web-1: `up` boots it (once defined, it keeps its
// host key, which is pinned in known_hosts) and `down` removes it.
func prodCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "down") {
		return usageError{"prod: want up or down"}
	}
	logger := newLogger()
	drv, err := worker.NewDriver(cfg, "local", logger)
	if err != nil {
		return err
	}
	defer drv.Close()
	dir := filepath.Join(cfg.StateDir, "prod")
	if args[0] == "down" {
		if err := drv.DestroyProduction(ctx, prodName); err != nil {
			return err
		}
		fmt.Printf("%s removed\n", prodName)
		return os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyPath := filepath.Join(dir, "ansible_ed25519")
	pub, err := loadOrCreateKey(keyPath)
	if err != nil {
		return err
	}
	cas, err := remote.LoadOrCreateCAs(cfg.StateDir)
	if err != nil {
		return err
	}
	known := filepath.Join(dir, "known_hosts")
	var identity *sandbox.Identity
	if _, err := os.Stat(known); errors.Is(err, fs.ErrNotExist) {
		hid, err := cas.HostIdentity(prodName, []string{prodIP})
		if err != nil {
			return err
		}
		files := cas.GuestFiles(hid, prodName)
		files = append(files, sandbox.GuestFile{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Content: pub})
		identity = &sandbox.Identity{Hostname: prodName, Files: files}
		// Pin first: the VM is defined with exactly this key. If the boot
		// fails, `airlock prod down` removes both.
		pin := fmt.Sprintf("%s,%s %s", prodName, prodIP, hid.PublicKey)
		if err := os.WriteFile(known, []byte(pin), 0o644); err != nil {
			return err
		}
	}
	sb, err := drv.EnsureProduction(ctx, virt.ProductionSpec{Name: prodName, Image: "bookworm", Network: prodNetwork, MAC: prodMAC, IP: prodIP, Identity: identity})
	if err != nil {
		return fmt.Errorf("prod up: %w (run `airlock prod down` to start over)", err)
	}
	hosts := fmt.Sprintf("# written by `airlock prod up`\n%s ansible_host=%s ansible_user=root ansible_python_interpreter=/usr/bin/python3\n", prodName, sb.IP)
	if err := os.WriteFile(filepath.Join(dir, "hosts.ini"), []byte(hosts), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s is running at %s (host key pinned in %s)\n", prodName, sb.IP, known)
	return nil
}

// loadOrCreateKey keeps the apply worker's SSH key for production.
func loadOrCreateKey(path string) ([]byte, error) {
	if b, err := os.ReadFile(path + ".pub"); err == nil {
		return b, nil
	}
	pubKey, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "airlock-apply")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	sp, err := ssh.NewPublicKey(pubKey)
	if err != nil {
		return nil, err
	}
	pub := ssh.MarshalAuthorizedKey(sp)
	return pub, os.WriteFile(path+".pub", pub, 0o644)
}
