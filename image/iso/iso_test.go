package iso

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"ingot.dev/ingot/image/disk"
	"ingot.dev/ingot/internal/testgate"
)

// TestWriteHybrid: the ISO reads as ISO 9660 with its files, its El Torito default entry points
// at the FAT image, and read as a disk it has a GPT (checked by go-diskfs and by util-linux's
// sfdisk, which verifies the CRCs and the backup) whose one partition, an ESP, is that image.
func TestWriteHybrid(t *testing.T) {
	dir := t.TempDir()
	esp := filepath.Join(dir, "esp.img")
	if _, err := disk.WriteFAT(esp, "INGOT-ISO", 0, []disk.File{{Path: "EFI/BOOT/BOOTX64.EFI", Data: []byte("MZ not really")}}); err != nil {
		t.Fatal(err)
	}
	payload := filepath.Join(dir, "disk.qcow2")
	os.WriteFile(payload, []byte(strings.Repeat("payload ", 100000)), 0o644)
	out := filepath.Join(dir, "ingot.iso")
	if err := Write(out, "INGOT", esp, map[string]string{"/disk.qcow2": payload}); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, err := BootImage(f)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(esp)
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil || string(got) != string(want) {
		t.Fatalf("the El Torito image at %d is not the ESP (%v)", off, err)
	}

	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatalf("no partition table: %v", err)
	}
	table, ok := pt.(*gpt.Table)
	if !ok || len(table.Partitions) == 0 {
		t.Fatalf("partition table %T %+v, want a GPT", pt, pt)
	}
	p := table.Partitions[0]
	if p.Type != gpt.EFISystemPartition || int64(p.Start)*512 != off || int64(p.End-p.Start+1)*512 != int64(len(want)) {
		t.Fatalf("partition 1 %+v, want an ESP at %d of %d bytes", p, off, len(want))
	}

	if sfdisk, err := exec.LookPath("sfdisk"); err == nil {
		o, err := exec.Command(sfdisk, "--verify", out).CombinedOutput()
		if err != nil || !strings.Contains(string(o), "No errors detected") {
			t.Fatalf("sfdisk --verify: %v\n%s", err, o)
		}
	} else if testgate.InCI() {
		t.Fatal("sfdisk (util-linux) is missing")
	}

	// Read as ISO 9660 (2048-byte blocks): the volume label and the files are there.
	iso, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly), diskfs.WithSectorSize(2048))
	if err != nil {
		t.Fatal(err)
	}
	defer iso.Close()
	fs, err := iso.GetFilesystem(0)
	if err != nil {
		t.Fatal(err)
	}
	if l := strings.TrimRight(fs.Label(), " "); l != "INGOT" {
		t.Fatalf("volume label %q", l)
	}
	pf, err := fs.OpenFile("/disk.qcow2", os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 8)
	pf.Read(b)
	if string(b) != "payload " {
		t.Fatalf("payload reads %q", b)
	}
}
