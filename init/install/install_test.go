package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/image/disk"
	"ingot.dev/ingot/image/iso"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/image/qcow2"
	"ingot.dev/ingot/internal/testgate"
)

// loop attaches file to a loop device (partitions scanned) and detaches it when the test ends.
func loop(t *testing.T, losetup, file string, readOnly bool) string {
	t.Helper()
	args := []string{"--find", "--show", "--partscan"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := exec.Command(losetup, append(args, file)...).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup %s: %v\n%s", file, err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "--detach", dev).Run() })
	return dev
}

// medium makes an install ISO carrying a raw disk image of 8 MiB (a pattern at its start, middle
// and end), whose install.json gives the digest sum (the image's own when "").
func medium(t *testing.T, dir, sum string) (string, []byte) {
	t.Helper()
	raw := filepath.Join(dir, "disk.raw")
	img := make([]byte, 8<<20)
	copy(img, "ingot disk")
	copy(img[3<<20:], bytes.Repeat([]byte("middle"), 5000))
	copy(img[len(img)-7:], "the end")
	os.WriteFile(raw, img, 0o644)
	if sum == "" {
		s := sha256.Sum256(img)
		sum = hex.EncodeToString(s[:])
	}
	q := filepath.Join(dir, manifest.FileQCOW2)
	if err := qcow2.Write(q, raw); err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(manifest.InstallInfo{Profile: "test", Version: "1", Arch: runtime.GOARCH, Disk: "disk.raw",
		DiskSize: int64(len(img)), DiskSHA256: sum, Image: manifest.FileQCOW2})
	infoPath := filepath.Join(dir, manifest.FileInstallInfo)
	os.WriteFile(infoPath, info, 0o644)
	esp := filepath.Join(dir, "esp.img")
	if _, err := disk.WriteFAT(esp, "INGOT-ISO", 0, []disk.File{{Path: "EFI/BOOT/BOOTX64.EFI", Data: []byte("MZ")}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, manifest.FileISO)
	if err := iso.Write(out, manifest.ISOLabel, esp, map[string]string{"/" + manifest.FileQCOW2: q, "/" + manifest.FileInstallInfo: infoPath}); err != nil {
		t.Fatal(err)
	}
	return out, img
}

// TestRunOnLoopDevices installs from an ISO on a loop device onto another, over old contents,
// and checks the refusals: a partition, the medium itself, a disk too small, and an image whose
// digest does not match what was written.
func TestRunOnLoopDevices(t *testing.T) {
	testgate.RequireRoot(t)
	losetup := testgate.RequireCommand(t, "losetup")
	dir := t.TempDir()
	isoFile, img := medium(t, dir, "")
	med := loop(t, losetup, isoFile, true)

	target := filepath.Join(dir, "target.raw")
	old := bytes.Repeat([]byte("old install "), (32<<20)/12+1)[:32<<20]
	os.WriteFile(target, old, 0o644)
	dev := loop(t, losetup, target, false)
	opts := Options{Target: dev, Sys: "/sys", Dev: "/dev", Wait: 5 * time.Second}

	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Medium != med {
		t.Errorf("medium %s, want %s", res.Medium, med)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got[:len(img)], img) {
		t.Fatal("the target does not hold the image")
	}
	if !bytes.Equal(got[len(got)-1<<20:], make([]byte, 1<<20)) || !bytes.Equal(got[len(img):len(img)+12], old[len(img):len(img)+12]) {
		t.Fatal("the target's last MiB is not wiped, or what lies between the image and it was touched")
	}

	for _, c := range []struct {
		name, target, want string
	}{
		{"the medium", med, "is the install medium"},
		{"not under /dev", "/tmp/disk", "want a disk under /dev"},
		{"missing", "/dev/nonexistent-disk", "no such disk"},
	} {
		o := opts
		o.Target, o.Wait = c.target, time.Second
		if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}

	// Too small: refused before anything is written.
	small := filepath.Join(dir, "small.raw")
	os.WriteFile(small, old[:4<<20], 0o644)
	o := opts
	o.Target = loop(t, losetup, small, false)
	if _, err := Run(context.Background(), o); err == nil || !strings.Contains(err.Error(), "the image needs 8 MiB") {
		t.Errorf("a 4 MiB target: %v", err)
	}
	if b, _ := os.ReadFile(small); !bytes.Equal(b, old[:4<<20]) {
		t.Error("a refused target was written to")
	}
}

// TestRunRefusesAWrongDigest: an image that does not read back as install.json's sha256 fails the
// install, naming both digests.
func TestRunRefusesAWrongDigest(t *testing.T) {
	testgate.RequireRoot(t)
	losetup := testgate.RequireCommand(t, "losetup")
	dir := t.TempDir()
	isoFile, _ := medium(t, dir, strings.Repeat("ab", 32))
	loop(t, losetup, isoFile, true)
	target := filepath.Join(dir, "target.raw")
	os.WriteFile(target, make([]byte, 16<<20), 0o644)
	_, err := Run(context.Background(), Options{Target: loop(t, losetup, target, false), Sys: "/sys", Dev: "/dev",
		Wait: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "want sha256:"+strings.Repeat("ab", 32)) {
		t.Fatalf("install of an image with the wrong digest: %v", err)
	}
}

// TestRunKeepsAnInstalledNode: a disk whose GPT has an INGOT-STATE partition holding an ext4
// superblock (a node installed and booted) is not overwritten — an install medium left in a
// machine that boots it first must not wipe the node — unless forced.
func TestRunKeepsAnInstalledNode(t *testing.T) {
	testgate.RequireRoot(t)
	losetup := testgate.RequireCommand(t, "losetup")
	dir := t.TempDir()
	isoFile, img := medium(t, dir, "")
	loop(t, losetup, isoFile, true)

	target := filepath.Join(dir, "node.raw")
	if err := disk.Write(target, disk.Layout{ESPMiB: disk.MinESPMiB, StateMiB: disk.MinStateMiB}, nil); err != nil {
		t.Fatal(err)
	}
	// The state partition starts after 1 MiB and the ESP; its superblock's magic at 1024+0x38.
	f, _ := os.OpenFile(target, os.O_RDWR, 0)
	f.WriteAt([]byte{0x53, 0xef}, (1+int64(disk.MinESPMiB))<<20+1024+0x38)
	f.Close()
	before, _ := os.ReadFile(target)
	opts := Options{Target: loop(t, losetup, target, false), Sys: "/sys", Dev: "/dev", Wait: 5 * time.Second}
	if _, err := Run(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "already holds an ingot install") {
		t.Fatalf("install over an installed node: %v, want a refusal", err)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
		t.Fatal("the refused disk was changed")
	}
	opts.Force = true
	if _, err := Run(context.Background(), opts); err != nil {
		t.Fatalf("forced install: %v", err)
	}
	if after, _ := os.ReadFile(target); !bytes.Equal(after[:len(img)], img) {
		t.Fatal("the forced install did not write the image")
	}
}
