package disk

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

func TestWriteReproducibleAndReadable(t *testing.T) {
	dir := t.TempDir()
	files := []File{
		{Path: "loader/loader.conf", Data: []byte("timeout 0\n")},
		{Path: "EFI/BOOT/BOOTX64.EFI", Data: bytes.Repeat([]byte("x"), 70000)},
		{Path: "EFI/ingot/slot-a.efi", Data: []byte("uki")},
	}
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	for i, p := range []string{a, b} {
		if i == 1 {
			// FAT stores times with 2-second resolution: a second write in another 2-second
			// window would differ if the time of writing leaked into the image.
			time.Sleep(2100 * time.Millisecond)
		}
		if err := Write(p, Layout{ESPMiB: 100, StateMiB: 64}, files); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("two writes of the same files differ")
	}

	d, err := diskfs.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl, ok := d.Table.(*gpt.Table)
	if !ok || len(tbl.Partitions) != 2 || tbl.Partitions[1].Name != StateName || tbl.Partitions[0].Type != gpt.EFISystemPartition {
		t.Fatalf("partition table = %+v", d.Table)
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := fs.OpenFile("/EFI/BOOT/BOOTX64.EFI", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(fd)
	if len(got) != 70000 {
		t.Fatalf("read back %d bytes", len(got))
	}
}

func TestWriteRejectsSmallESP(t *testing.T) {
	err := Write(filepath.Join(t.TempDir(), "x.raw"), Layout{ESPMiB: 50, StateMiB: 64}, nil)
	if err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Fatalf("err = %v", err)
	}
}
