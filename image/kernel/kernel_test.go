package kernel

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The closure is exercised against the real Debian kernels in the image tests; here a fake module
// tree proves ordering, builtins and the error for a missing module.
func writeModule(t *testing.T, dir, rel string, deps string, aliases ...string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fakeELF(t, "depends="+deps+"\x00license=GPL\x00"+aliasInfo(aliases)), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestClosure(t *testing.T) {
	dir := t.TempDir()
	mods := filepath.Join(dir, "lib/modules/6.1.0-test")
	writeModule(t, mods, "kernel/drivers/virtio/virtio.ko", "")
	writeModule(t, mods, "kernel/drivers/virtio/virtio_ring.ko", "")
	writeModule(t, mods, "kernel/drivers/virtio/virtio_pci.ko", "virtio,virtio_ring")
	writeModule(t, mods, "kernel/drivers/block/virtio_blk.ko", "virtio_ring,virtio")
	writeModule(t, mods, "kernel/drivers/input/evdev.ko", "")
	os.WriteFile(filepath.Join(mods, "modules.builtin"), []byte("kernel/drivers/acpi/button.ko\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.WriteFile(filepath.Join(dir, "boot/vmlinuz-6.1.0-test"), []byte("kernel"), 0o644)

	k, err := FromRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Closure([]string{"virtio-blk", "button", "virtio_pci"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
	}
	if want := "virtio_ring virtio virtio_blk virtio_pci"; strings.Join(names, " ") != want {
		t.Fatalf("closure = %v, want %s", names, want)
	}
	dep := string(ModulesDep(got))
	if !strings.Contains(dep, "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n") {
		t.Fatalf("modules.dep:\n%s", dep)
	}
	if _, err := k.Closure([]string{"no_such_mod"}); err == nil || !strings.Contains(err.Error(), `"no_such_mod" does not exist`) {
		t.Fatalf("missing module error = %v", err)
	}
}

// TestModulesAlias: the image's modules.alias keeps only the aliases of modules it carries.
func TestModulesAlias(t *testing.T) {
	dir := t.TempDir()
	mods := filepath.Join(dir, "lib/modules/6.1.0-test")
	// Debian's packages have no modules.alias: it comes from the modules' own alias= entries.
	writeModule(t, mods, "kernel/net/netfilter/nft_numgen.ko", "", "nft-expr-numgen")
	writeModule(t, mods, "kernel/drivers/block/virtio_blk.ko", "", "virtio:d00000002v*", "pci:v00001AF4d00001001sv*sd*bc*sc*i*")
	writeModule(t, mods, "kernel/net/netfilter/nfnetlink.ko", "", "net-pf-16-proto-12")
	os.MkdirAll(filepath.Join(dir, "boot"), 0o755)
	os.WriteFile(filepath.Join(dir, "boot/vmlinuz-6.1.0-test"), []byte("kernel"), 0o644)
	k, err := FromRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	closure, err := k.Closure([]string{"nft_numgen"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.ModulesAlias(closure)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "alias nft-expr-numgen nft_numgen\n" {
		t.Errorf("modules.alias for nft_numgen alone:\n%s", got)
	}
	closure, err = k.Closure([]string{"virtio_blk", "nft_numgen"})
	if err != nil {
		t.Fatal(err)
	}
	got, err = k.ModulesAlias(closure)
	if err != nil {
		t.Fatal(err)
	}
	if want := "alias virtio:d00000002v* virtio_blk\nalias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio_blk\nalias nft-expr-numgen nft_numgen\n"; string(got) != want {
		t.Errorf("modules.alias for virtio_blk and nft_numgen:\n%s\nwant\n%s", got, want)
	}
}

func aliasInfo(aliases []string) string {
	var s string
	for _, a := range aliases {
		s += "alias=" + a + "\x00"
	}
	return s
}
