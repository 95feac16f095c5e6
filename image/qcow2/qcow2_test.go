package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/internal/testgate"
)

// TestWriteQemuImgAgrees converts sparse raw images with data in awkward places (the first
// cluster, across an L2 table's boundary, a cluster's last byte, the disk's last byte) and has
// QEMU's own tool check the result and compare it byte for byte with the raw image.
func TestWriteQemuImgAgrees(t *testing.T) {
	qemuImg := testgate.RequireCommand(t, "qemu-img")
	for _, c := range []struct {
		name   string
		size   int64
		writes map[int64]string
	}{
		{"1.5GiB", 3 << 29, map[int64]string{
			0:                                "ingot boot sector",
			clusterSize*l2Entries - 3:        "across-L2", // the end of the first L2 table's range and the start of the next
			5*clusterSize + clusterSize - 1:  "x",         // a cluster's last byte
			(3 << 29) - 4:                    "end!",
			(1 << 30) + 123*clusterSize + 17: strings.Repeat("data", 40000), // several clusters
		}},
		{"empty 64MiB", 64 << 20, nil},
		{"1TiB sparse", 1 << 40, map[int64]string{1 << 20: "gpt", (1 << 40) - 512: "backup gpt"}},
		{"odd size", 10<<20 + 4096, map[int64]string{10 << 20: "tail past the last whole cluster"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			raw, qc := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
			f, err := os.Create(raw)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Truncate(c.size); err != nil {
				t.Fatal(err)
			}
			// A cluster of zeros written out (not a hole) must not be stored either.
			if _, err := f.WriteAt(make([]byte, 3*clusterSize), 40*clusterSize); err != nil {
				t.Fatal(err)
			}
			var payload int
			for off, s := range c.writes {
				if _, err := f.WriteAt([]byte(s), off); err != nil {
					t.Fatal(err)
				}
				payload += len(s)
			}
			f.Close()
			if err := Write(qc, raw); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(qemuImg, "check", "-f", "qcow2", qc).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img check: %v\n%s", err, out)
			}
			if out, err := exec.Command(qemuImg, "compare", "-f", "raw", "-F", "qcow2", raw, qc).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img compare: %v\n%s", err, out)
			}
			info, _ := exec.Command(qemuImg, "info", qc).CombinedOutput()
			if !bytes.Contains(info, []byte("compat: 1.1")) {
				t.Errorf("not a version 3 image:\n%s", info)
			}
			st, _ := os.Stat(qc)
			// Header, L1, refcounts, L2s and the data clusters: a few clusters per write.
			if limit := (int64(16+2*len(c.writes)+payload/clusterSize) + c.size/(clusterSize*l2Entries)*8/clusterSize) * clusterSize; st.Size() > limit {
				t.Errorf("qcow2 is %d bytes for %d bytes of data, want at most %d", st.Size(), payload, limit)
			}
			t.Logf("%s: qcow2 %d KiB", c.name, st.Size()>>10)
		})
	}
}

// TestWriteLeavesNothingOnError: a source that cannot be read leaves no destination file.
func TestWriteLeavesNothingOnError(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "disk.qcow2")
	err := Write(dst, filepath.Join(dir, "missing.raw"))
	if err == nil || !strings.Contains(err.Error(), "missing.raw") {
		t.Fatalf("Write of a missing source: %v, want an error naming it", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// TestExtentsReadsBack: what Extents says of an image Write made, and of one qemu-img made,
// rebuilds the raw image byte for byte.
func TestExtentsReadsBack(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	f, _ := os.Create(raw)
	f.Truncate(520 << 20)
	for off, s := range map[int64]string{0: "boot", 513 << 20: strings.Repeat("z", 200000), (520 << 20) - 1: "!"} {
		f.WriteAt([]byte(s), off)
	}
	f.Close()
	want, _ := os.ReadFile(raw)
	images := map[string]string{"ours": filepath.Join(dir, "ours.qcow2")}
	if err := Write(images["ours"], raw); err != nil {
		t.Fatal(err)
	}
	if qemuImg, err := exec.LookPath("qemu-img"); err == nil {
		images["qemu-img"] = filepath.Join(dir, "theirs.qcow2")
		if out, err := exec.Command(qemuImg, "convert", "-f", "raw", "-O", "qcow2", raw, images["qemu-img"]).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert: %v\n%s", err, out)
		}
	}
	for name, img := range images {
		q, _ := os.Open(img)
		size, ext, err := Extents(q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if size != int64(len(want)) {
			t.Fatalf("%s: size %d, want %d", name, size, len(want))
		}
		got := make([]byte, size)
		var next int64
		for _, e := range ext {
			if e.Offset != next {
				t.Fatalf("%s: extents leave a gap at %d", name, next)
			}
			if e.Host >= 0 {
				q.ReadAt(got[e.Offset:e.Offset+e.Length], e.Host)
			}
			next = e.Offset + e.Length
		}
		q.Close()
		if next != size || !bytes.Equal(got, want) {
			t.Fatalf("%s: extents rebuild a different disk (cover %d of %d)", name, next, size)
		}
		t.Logf("%s: %d extents", name, len(ext))
	}
	// Not a QCOW2 file: refused by name.
	if _, _, err := Extents(bytes.NewReader(make([]byte, 512))); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("Extents of zeros: %v", err)
	}
}
