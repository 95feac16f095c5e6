package slots

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"ingot.dev/ingot/image/disk"
)

// TestBootDisk: the installer's boot option names the image's ESP as its GPT says (number, start,
// size, unique GUID) and the loader on it, goes first in BootOrder ahead of the firmware's own,
// and is BootNext; installing again reuses it.
func TestBootDisk(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	if err := disk.Write(img, disk.Layout{ESPMiB: disk.MinESPMiB, StateMiB: disk.MinStateMiB}, nil); err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "efivars")
	os.MkdirAll(vars, 0o755)
	os.WriteFile(filepath.Join(vars, "Boot0000-"+globalGUID), []byte{7, 0, 0, 0, 1, 0, 4, 0, 'C', 0, 0, 0, 0x7f, 0xff, 4, 0}, 0o644)
	os.WriteFile(filepath.Join(vars, "BootOrder-"+globalGUID), []byte{7, 0, 0, 0, 0, 0}, 0o644)

	num, err := BootDisk(vars, img, "EFI/BOOT/BOOTX64.EFI")
	if err != nil {
		t.Fatal(err)
	}
	if num != 0x0100 {
		t.Fatalf("option number %04X, want 0100 (the first free one from 0100)", num)
	}
	opt, _ := os.ReadFile(filepath.Join(vars, "Boot0100-"+globalGUID))
	d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	pt, _ := d.GetPartitionTable()
	esp := pt.(*gpt.Table).Partitions[0]
	d.Close()
	le := binary.LittleEndian
	opt = opt[4:] // efivarfs attributes
	desc := ucs2("ingot")
	if le.Uint32(opt) != 1 || !bytes.Equal(opt[6:6+len(desc)], desc) {
		t.Fatalf("option header/description: % x", opt[:6+len(desc)])
	}
	hd := opt[6+len(desc):]
	if hd[0] != 4 || hd[1] != 1 || le.Uint32(hd[4:]) != 1 || le.Uint64(hd[8:]) != esp.Start || le.Uint64(hd[16:]) != esp.End-esp.Start+1 || hd[40] != 2 || hd[41] != 2 {
		t.Fatalf("hard drive node % x, want partition 1 at %d of %d sectors", hd[:42], esp.Start, esp.End-esp.Start+1)
	}
	var guid [16]byte
	putMixed(guid[:], esp.GUID)
	if !bytes.Equal(hd[24:40], guid[:]) {
		t.Fatalf("partition signature % x, want the ESP's GUID %s", hd[24:40], esp.GUID)
	}
	if !bytes.Contains(opt, ucs2(`\EFI\BOOT\BOOTX64.EFI`)) || !bytes.HasSuffix(opt, []byte{0x7f, 0xff, 4, 0}) {
		t.Fatal("the option does not name the loader, or its device path is not ended")
	}
	check := func() {
		t.Helper()
		order, _ := os.ReadFile(filepath.Join(vars, "BootOrder-"+globalGUID))
		next, _ := os.ReadFile(filepath.Join(vars, "BootNext-"+globalGUID))
		if !bytes.Equal(order[4:], []byte{0, 1, 0, 0}) || !bytes.Equal(next[4:], []byte{0, 1}) {
			t.Fatalf("BootOrder % x, BootNext % x; want 0100 first, then 0000, and 0100 next", order, next)
		}
	}
	check()
	if n, err := BootDisk(vars, img, "EFI/BOOT/BOOTX64.EFI"); err != nil || n != num {
		t.Fatalf("second BootDisk: %04X, %v; want the same option again", n, err)
	}
	check()
	if _, err := BootDisk(vars, filepath.Join(dir, "efivars", "Boot0000-"+globalGUID), "x"); err == nil || !strings.Contains(err.Error(), "no GPT") {
		t.Fatalf("BootDisk of something without a GPT: %v", err)
	}
}

// putMixed writes a GUID string's bytes as GPT stores them (first three fields little-endian).
func putMixed(b []byte, s string) {
	h := strings.ReplaceAll(s, "-", "")
	raw := make([]byte, 16)
	for i := range raw {
		var v byte
		for _, c := range h[2*i : 2*i+2] {
			v <<= 4
			switch {
			case c >= '0' && c <= '9':
				v |= byte(c - '0')
			case c >= 'a' && c <= 'f':
				v |= byte(c-'a') + 10
			case c >= 'A' && c <= 'F':
				v |= byte(c-'A') + 10
			}
		}
		raw[i] = v
	}
	binary.LittleEndian.PutUint32(b[0:], binary.BigEndian.Uint32(raw[0:4]))
	binary.LittleEndian.PutUint16(b[4:], binary.BigEndian.Uint16(raw[4:6]))
	binary.LittleEndian.PutUint16(b[6:], binary.BigEndian.Uint16(raw[6:8]))
	copy(b[8:], raw[8:])
}
