package worker

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
)

// The demo's production VM. Its MAC has a static DHCP reservation on the
// airlock-prod network (deploy/host/airlock-prod.xml).
const (
	ProdName    = "prod-web-1"
	prodMAC     = "52:54:00:78:00:0a"
	ProdIP      = "10.78.0.10"
	prodNetwork = "airlock-prod"
)

// ProdVM is where the demo's production host is and how to reach it.
type ProdVM struct {
	Dir        string // <state>/prod
	IP         string
	Key        string // the apply worker's private key
	KnownHosts string // prod-web-1's pinned host key
	HostsFile  string // inventory with its address
}

// EnsureProdVM boots (or reuses) prod-web-1 from the golden image on the
// airlock-prod network. On first boot it gets a host key, which is pinned
// in known_hosts, and the apply worker's public key for root.
func EnsureProdVM(ctx context.Context, stateDir string, drv *virt.Driver) (ProdVM, error) {
	dir := filepath.Join(stateDir, "prod")
	vm := ProdVM{Dir: dir, Key: filepath.Join(dir, "ansible_ed25519"), KnownHosts: filepath.Join(dir, "known_hosts"), HostsFile: filepath.Join(dir, "hosts.ini")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return vm, err
	}
	pub, err := loadOrCreateKey(vm.Key)
	if err != nil {
		return vm, err
	}
	cas, err := remote.LoadOrCreateCAs(stateDir)
	if err != nil {
		return vm, err
	}
	var identity *sandbox.Identity
	if _, err := os.Stat(vm.KnownHosts); errors.Is(err, fs.ErrNotExist) {
		hid, err := cas.HostIdentity(ProdName, []string{ProdIP})
		if err != nil {
			return vm, err
		}
		files := cas.GuestFiles(hid, ProdName)
		files = append(files, sandbox.GuestFile{Path: "/root/.ssh/authorized_keys", Mode: 0o600, Content: pub})
		identity = &sandbox.Identity{Hostname: ProdName, Files: files}
		// Pin first: the VM is defined with exactly this key. If the boot
		// fails, `airlock prod down` removes both.
		pin := fmt.Sprintf("%s,%s %s", ProdName, ProdIP, hid.PublicKey)
		if err := os.WriteFile(vm.KnownHosts, []byte(pin), 0o644); err != nil {
			return vm, err
		}
	}
	sb, err := drv.EnsureProduction(ctx, virt.ProductionSpec{Name: ProdName, Image: "bookworm", Network: prodNetwork, MAC: prodMAC, IP: ProdIP, Identity: identity})
	if err != nil {
		return vm, fmt.Errorf("prod up: %w (run `airlock prod down` to start over)", err)
	}
	hosts := fmt.Sprintf("# written by `airlock prod up`\n%s ansible_host=%s ansible_user=root ansible_python_interpreter=/usr/bin/python3\n", ProdName, sb.IP)
	if err := os.WriteFile(vm.HostsFile, []byte(hosts), 0o644); err != nil {
		return vm, err
	}
	vm.IP = sb.IP
	return vm, nil
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
