package kmod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOrder(t *testing.T) {
	dir := t.TempDir()
	dep := `kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
`
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	d, err := ReadDeps(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.Order([]string{"virtio-pci", "virtio_blk"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "virtio virtio_ring virtio_pci_modern_dev virtio_pci virtio_blk"; strings.Join(got, " ") != want {
		t.Fatalf("order = %v, want %s", got, want)
	}
	if _, err := d.Order([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown module error = %v", err)
	}
	if d.Path("virtio") != filepath.Join(dir, "kernel/drivers/virtio/virtio.ko") {
		t.Fatal(d.Path("virtio"))
	}
}
