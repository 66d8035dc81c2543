package virt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os/exec"
	"sort"
	"strings"
	"sync"
)

// Firewall keeps the set of sandbox addresses allowed out of the isolated
// network. Everything else is dropped by the host's rules (deploy/host).
type Firewall interface {
	Open(ctx context.Context, ip string) error
	Close(ctx context.Context, ip string) error // closing a closed address is fine
	ListOpen(ctx context.Context) ([]string, error)
}

// NFT edits an nftables set, by default `inet airlock egress_open`.
type NFT struct {
	Family, Table, Set string // defaults inet, airlock, egress_open
	Binary             string // default "nft"
}

// target is "family table set" with defaults.
func (n NFT) target() []string {
	def := func(s, v string) string {
		if s == "" {
			return v
		}
		return s
	}
	return []string{def(n.Family, "inet"), def(n.Table, "airlock"), def(n.Set, "egress_open")}
}

func (n NFT) run(ctx context.Context, args ...string) ([]byte, error) {
	bin := n.Binary
	if bin == "" {
		bin = "nft"
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("nft %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func checkIP(ip string) error {
	if a, err := netip.ParseAddr(ip); err != nil || !a.Is4() {
		return badInput("%q is not an IPv4 address", ip)
	}
	return nil
}

// Open adds ip to the set (adding an existing element is not an error).
func (n NFT) Open(ctx context.Context, ip string) error {
	if err := checkIP(ip); err != nil {
		return err
	}
	args := append(append([]string{"add", "element"}, n.target()...), "{ "+ip+" }")
	_, err := n.run(ctx, args...)
	return err
}

// Close removes ip; a missing element, set or table counts as closed.
func (n NFT) Close(ctx context.Context, ip string) error {
	if err := checkIP(ip); err != nil {
		return err
	}
	args := append(append([]string{"delete", "element"}, n.target()...), "{ "+ip+" }")
	_, err := n.run(ctx, args...)
	if err != nil && (strings.Contains(err.Error(), "No such file or directory") || missingNFT(err)) {
		return nil // no table, no set, or no nft at all: nothing is open
	}
	return err
}

// ListOpen returns the addresses in the set; a missing set is empty.
func (n NFT) ListOpen(ctx context.Context) ([]string, error) {
	out, err := n.run(ctx, append([]string{"-j", "list", "set"}, n.target()...)...)
	if err != nil {
		if strings.Contains(err.Error(), "No such file or directory") || missingNFT(err) {
			return nil, nil
		}
		return nil, err
	}
	return parseNFTSet(out)
}

func parseNFTSet(out []byte) ([]string, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parse nft json: %w", err)
	}
	var ips []string
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			var s string
			if json.Unmarshal(e, &s) == nil {
				ips = append(ips, s)
				continue
			}
			var obj struct {
				Elem struct {
					Val string `json:"val"`
				} `json:"elem"`
			}
			if json.Unmarshal(e, &obj) == nil && obj.Elem.Val != "" {
				ips = append(ips, obj.Elem.Val)
			}
		}
	}
	sort.Strings(ips)
	return ips, nil
}

// FakeFirewall is an in-memory Firewall for tests without nftables.
type FakeFirewall struct {
	mu   sync.Mutex
	open map[string]bool
}

func (f *FakeFirewall) Open(_ context.Context, ip string) error {
	if err := checkIP(ip); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open == nil {
		f.open = map[string]bool{}
	}
	f.open[ip] = true
	return nil
}

func (f *FakeFirewall) Close(_ context.Context, ip string) error {
	if err := checkIP(ip); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.open, ip)
	return nil
}

func (f *FakeFirewall) ListOpen(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ips []string
	for ip := range f.open {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	return ips, nil
}

// missingNFT: nft itself is not installed (so no set exists either).
func missingNFT(err error) bool {
	return errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)
}
