package statedisk

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"ingot.dev/ingot/image/disk"
)

const (
	espMiB   = 100
	stateMiB = 64
)

// newDisk writes a disk image as `ingot build` does and grows the file to size bytes, as
// `ingot qemu --disk-size` does with its working copy.
func newDisk(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	files := []disk.File{{Path: "loader/loader.conf", Data: []byte("timeout 0\n")}}
	if err := disk.Write(p, disk.Layout{ESPMiB: espMiB, StateMiB: stateMiB}, files); err != nil {
		t.Fatal(err)
	}
	if size > 0 {
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// readGPT reads the table back with go-diskfs, an implementation independent of Grow's.
func readGPT(t *testing.T, p string) *gpt.Table {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tbl, err := gpt.Read(file.New(f, true), 512, 512)
	if err != nil {
		t.Fatalf("go-diskfs reading %s: %v", p, err)
	}
	return tbl
}

func readAt(t *testing.T, p string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t *testing.T, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func digest(t *testing.T, p string) [32]byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

func TestGrowBlankStateToEndOfDisk(t *testing.T) {
	const size = 300 << 20
	p := newDisk(t, size)
	before := readGPT(t, p)

	g, err := Grow(p, Label)
	if err != nil {
		t.Fatal(err)
	}
	lastLBA := uint64(size/512 - 1)
	lastUsable := lastLBA - 32 - 1
	start := before.Partitions[1].Start
	wantEnd := start + (lastUsable-start+1)/2048*2048 - 1
	if !g.Grown || g.Index != 2 || g.Start != int64(start)*512 || g.Size != int64(wantEnd-start+1)*512 {
		t.Fatalf("Grow = %+v; want partition 2 grown from byte %d to %d bytes", g, start*512, (wantEnd-start+1)*512)
	}

	// The primary table, as go-diskfs reads it: the state partition ends a MiB-aligned step
	// before the backup table; the ESP has not moved.
	after := readGPT(t, p)
	if after.RecoveredFromBackup {
		t.Fatal("go-diskfs fell back to the backup GPT: the primary is invalid")
	}
	st := after.Partitions[1]
	if st.Name != Label || st.Start != start || st.End != wantEnd {
		t.Fatalf("state partition after Grow: %s %d-%d; want %s %d-%d", st.Name, st.Start, st.End, Label, start, wantEnd)
	}
	if esp := after.Partitions[0]; esp.Start != before.Partitions[0].Start || esp.End != before.Partitions[0].End {
		t.Fatalf("ESP moved: %d-%d, was %d-%d", esp.Start, esp.End, before.Partitions[0].Start, before.Partitions[0].End)
	}

	// The old backup table, now inside the partition, is gone: the partition stays blank.
	if k, err := probeRange(p, g.Start, g.Size); err != nil || k != Blank {
		t.Fatalf("grown partition probes as %v (%v); want blank", k, err)
	}
	// The image's old backup table (its last 33 sectors) lies inside the grown partition now and
	// is cleared.
	oldDisk := int64(1+espMiB+stateMiB+1) << 20
	if old := readAt(t, p, oldDisk-33*512, 33*512); !allZero(old) {
		t.Fatalf("the old backup GPT is still at byte %d: %q", oldDisk-512, old[len(old)-512:][:8])
	}
	// The protective MBR covers the grown disk.
	mbr := readAt(t, p, 0, 512)
	if n := uint64(mbr[446+12]) | uint64(mbr[446+13])<<8 | uint64(mbr[446+14])<<16 | uint64(mbr[446+15])<<24; n != lastLBA {
		t.Fatalf("protective MBR covers %d sectors; want %d", n, lastLBA)
	}

	// Once grown, a second Grow changes nothing.
	d := digest(t, p)
	if g2, err := Grow(p, Label); err != nil || g2.Grown {
		t.Fatalf("second Grow = %+v, %v; want untouched", g2, err)
	}
	if digest(t, p) != d {
		t.Fatal("second Grow changed the disk")
	}

	// The backup table at the last LBA stands on its own: with the primary header wiped, go-diskfs
	// recovers the same partitions from it.
	writeAt(t, p, 512, make([]byte, 512))
	backup := readGPT(t, p)
	if !backup.RecoveredFromBackup {
		t.Fatal("go-diskfs did not read the backup GPT")
	}
	if b := backup.Partitions[1]; b.Name != Label || b.Start != start || b.End != wantEnd {
		t.Fatalf("backup GPT state partition: %s %d-%d; want %d-%d", b.Name, b.Start, b.End, start, wantEnd)
	}
	// The kernel's reading of the grown table is checked by the VM test (qemu/vmtest): this
	// host's kernel may lack a GPT parser (CONFIG_EFI_PARTITION), so a loop device proves nothing.
}

// probeRange reads a partition's start inside a disk image the way Probe reads a device.
func probeRange(p string, off, size int64) (Kind, error) {
	f, err := os.Open(p)
	if err != nil {
		return Other, err
	}
	defer f.Close()
	buf := make([]byte, min(size, 1<<20))
	if _, err := f.ReadAt(buf, off); err != nil {
		return Other, err
	}
	if len(bytes.Trim(buf, "\x00")) == 0 {
		return Blank, nil
	}
	return Other, nil
}

// A formatted state partition grows when its disk has (the filesystem follows online, Resize),
// and its contents stay where they were.
func TestGrowFormattedState(t *testing.T) {
	stateStart := int64(1+espMiB) << 20
	p := newDisk(t, 600<<20)
	head := bytes.Repeat([]byte("state"), 1<<20/5)
	head[1024+56], head[1024+57] = 0x53, 0xEF // the ext4 superblock's magic
	writeAt(t, p, stateStart, head)
	g, err := Grow(p, Label)
	if err != nil || !g.Grown {
		t.Fatalf("Grow = %+v, %v; want grown", g, err)
	}
	if g.Start != stateStart || g.Size != (600-1-espMiB-1)<<20 {
		t.Fatalf("Grow = %+v", g)
	}
	if !bytes.Equal(readAt(t, p, stateStart, int64(len(head))), head) {
		t.Fatal("Grow changed the partition's contents")
	}
}

func TestGrowLeavesUsedOrFullStateAlone(t *testing.T) {
	stateStart := int64(1+espMiB) << 20
	for _, tc := range []struct {
		name  string
		size  int64          // 0: as written, already ending at the end of the disk
		write map[int64]byte // bytes written into the state partition, by offset
	}{
		{name: "data at the end of the first MiB", size: 600 << 20, write: map[int64]byte{1<<20 - 1: 1}},
		{name: "already at the end", size: 0},
		{name: "less than a MiB to gain", size: int64(1+espMiB+stateMiB+1)<<20 + 8<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newDisk(t, tc.size)
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for off, b := range tc.write {
				if _, err := f.WriteAt([]byte{b}, stateStart+off); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			d := digest(t, p)
			g, err := Grow(p, Label)
			if err != nil {
				t.Fatal(err)
			}
			if g.Grown {
				t.Fatalf("Grow = %+v; want the table left alone", g)
			}
			if digest(t, p) != d {
				t.Fatal("Grow changed the disk's bytes")
			}
		})
	}
}

func TestGrowErrors(t *testing.T) {
	p := newDisk(t, 1<<30)
	if _, err := Grow(p, "NOPE"); err == nil || !strings.Contains(err.Error(), "no state partition named NOPE") || !strings.Contains(err.Error(), p) {
		t.Fatalf("Grow of a missing label: %v", err)
	}
	hdr := readAt(t, p, 512, 512)
	hdr[60] ^= 0xFF // inside the disk GUID, covered by the header CRC
	writeAt(t, p, 512, hdr)
	if _, err := Grow(p, Label); err == nil || !strings.Contains(err.Error(), "GPT header CRC") {
		t.Fatalf("Grow of a corrupt header: %v", err)
	}
}

func TestWholeDisk(t *testing.T) {
	sys := t.TempDir()
	dev := filepath.Join(sys, "devices", "pci0000:00", "virtio1", "block", "vda")
	os.MkdirAll(filepath.Join(dev, "vda2"), 0o755)
	os.WriteFile(filepath.Join(dev, "vda2", "partition"), []byte("2\n"), 0o644)
	class := filepath.Join(sys, "class", "block")
	os.MkdirAll(class, 0o755)
	if err := os.Symlink(filepath.Join(dev, "vda2"), filepath.Join(class, "vda2")); err != nil {
		t.Fatal(err)
	}
	d, n, err := wholeDisk(class, "/dev", "/dev/vda2")
	if err != nil || d != "/dev/vda" || n != 2 {
		t.Fatalf("wholeDisk = %q, %d, %v; want /dev/vda, 2", d, n, err)
	}
}
