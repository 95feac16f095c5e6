package statedisk

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"ingot.dev/ingot/internal/testgate"
)

func TestFindByPartname(t *testing.T) {
	sys := t.TempDir()
	for name, ev := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=INGOT-ESP\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=INGOT-STATE\n",
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "uevent"), []byte(ev), 0o644)
	}
	dev, err := Find(context.Background(), sys, "/dev", Label, 0)
	if err != nil || dev != "/dev/vda2" {
		t.Fatalf("Find = %q, %v", dev, err)
	}
	if _, err := Find(context.Background(), sys, "/dev", "NOPE", 30*time.Millisecond); err == nil {
		t.Fatal("found a label that is not there")
	}
}

// A disk whose driver probes slowly (NVMe, AHCI) shows up after the usual wait: Find keeps looking
// while no disk is there at all, then gives its partitions the usual wait.
func TestFindWaitsForASlowDisk(t *testing.T) {
	sys := t.TempDir()
	os.MkdirAll(filepath.Join(sys, "loop0"), 0o755)
	os.WriteFile(filepath.Join(sys, "loop0", "uevent"), []byte("DEVNAME=loop0\nDEVTYPE=disk\n"), 0o644)
	go func() {
		time.Sleep(300 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "nvme0n1"), 0o755)
		os.WriteFile(filepath.Join(sys, "nvme0n1", "uevent"), []byte("DEVNAME=nvme0n1\nDEVTYPE=disk\n"), 0o644)
		time.Sleep(20 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "nvme0n1p2"), 0o755)
		os.WriteFile(filepath.Join(sys, "nvme0n1p2", "partition"), []byte("2\n"), 0o644)
		os.WriteFile(filepath.Join(sys, "nvme0n1p2", "uevent"), []byte("DEVNAME=nvme0n1p2\nDEVTYPE=partition\nPARTNAME=INGOT-STATE\n"), 0o644)
	}()
	dev, err := Find(context.Background(), sys, "/dev", Label, 50*time.Millisecond)
	if err != nil || dev != "/dev/nvme0n1p2" {
		t.Fatalf("Find = %q, %v", dev, err)
	}
}

func TestProbeAndFormat(t *testing.T) {
	img := filepath.Join(t.TempDir(), "state.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 64<<20)
	if k, err := Probe(img); err != nil || k != Blank {
		t.Fatalf("probe blank = %v, %v", k, err)
	}
	if err := Format(img, Label); err != nil {
		t.Fatal(err)
	}
	if k, err := Probe(img); err != nil || k != Ext4 {
		t.Fatalf("probe formatted = %v, %v", k, err)
	}
	junk := filepath.Join(t.TempDir(), "junk.img")
	os.WriteFile(junk, []byte(strings.Repeat("data", 4096)), 0o644)
	if k, _ := Probe(junk); k != Other {
		t.Fatalf("probe junk = %v", k)
	}

	// The kernel must accept what we wrote: mount it through a loop device (root only) and
	// write a file; e2fsck must find it clean afterwards.
	testgate.RequireRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", "-t", "ext4", img, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount formatted image: %v: %s", err, out)
	}
	werr := os.WriteFile(filepath.Join(mnt, "hello"), []byte("state"), 0o644)
	unix.Unmount(mnt, 0)
	if werr != nil {
		t.Fatal(werr)
	}
	fsck := testgate.RequireCommand(t, "e2fsck")
	if out, err := exec.Command(fsck, "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck: %v\n%s", err, out)
	}
}
