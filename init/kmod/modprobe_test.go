package kmod

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestModprobeResolves: a name or an alias the kernel asks for loads the image's module after its
// dependencies; an unknown one fails (quietly with -q).
func TestModprobeResolves(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(
		"kernel/net/netfilter/nf_tables.ko:\n"+
			"kernel/net/netfilter/nft_numgen.ko: kernel/net/netfilter/nf_tables.ko\n"+
			"kernel/net/netfilter/nfnetlink.ko:\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(
		"# Aliases extracted from modules themselves.\n"+
			"alias nft-expr-numgen nft_numgen\n"+
			"alias net-pf-16-proto-12 nfnetlink\n"+
			"alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\n"), 0o644)
	d, err := ReadDeps(dir)
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := ReadAliases(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		loads  []string
		status int
	}{
		{"nft-expr-numgen", []string{"nf_tables.ko", "nft_numgen.ko"}, 0},
		{"nft_numgen", []string{"nf_tables.ko", "nft_numgen.ko"}, 0},
		{"nft-numgen", []string{"nf_tables.ko", "nft_numgen.ko"}, 0}, // dashes are underscores
		{"net-pf-16-proto-12", []string{"nfnetlink.ko"}, 0},
		// An alias of a module the image does not carry: nothing to load.
		{"pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", nil, 1},
		{"net-pf-99", nil, 1},
	} {
		var loaded []string
		var stderr bytes.Buffer
		status := d.probe(tc.name, "", aliases, false, &stderr, func(p, _ string) error {
			loaded = append(loaded, filepath.Base(p))
			return nil
		})
		if status != tc.status || !slices.Equal(loaded, tc.loads) {
			t.Errorf("modprobe %s: status %d loads %q, want %d and %q (stderr %q)", tc.name, status, loaded, tc.status, tc.loads, stderr.String())
		}
		if tc.status != 0 && !bytes.Contains(stderr.Bytes(), []byte("no module "+tc.name+" in this image")) {
			t.Errorf("modprobe %s: stderr %q does not say the module is missing", tc.name, stderr.String())
		}
	}
	var stderr bytes.Buffer
	if s := d.probe("net-pf-99", "", aliases, true, &stderr, Load); s != 1 || stderr.Len() != 0 {
		t.Errorf("modprobe -q of a missing module: status %d, stderr %q; want 1 and silence", s, stderr.String())
	}
	if s := Modprobe([]string{"-r", "x"}, &stderr); s != 2 {
		t.Errorf("modprobe -r: status %d, want 2 (not supported)", s)
	}
}
