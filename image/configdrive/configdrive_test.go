package configdrive

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
)

// node is a node.toml of a few KiB with a multi-line string, as one with certificates is.
var node = []byte("hostname = \"worker-1\"\n\n[kubernetes]\nca = \"\"\"\n" + strings.Repeat("MIIBSzCB86ADAgECAgEBMAoGCCqGSM49BAMCMBUxEzARBgNVBAMTCmNsdXN0ZXIt\n", 80) + "\"\"\"\n")

const epoch = 1700000000 // 2023-11-14T22:13:20Z

// TestWriteRead writes a drive in each format and reads node.toml and the label back through
// go-diskfs, without mounting anything; blkid, when installed, must see the same label.
func TestWriteRead(t *testing.T) {
	for _, tc := range []struct {
		format Format
		label  string
	}{
		{VFAT, "INGOT-CONFI"}, // FAT labels are 11 characters
		{ISO, "INGOT-CONFIG"},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "config.img")
			if err := Write(img, tc.format, node, epoch); err != nil {
				t.Fatal(err)
			}
			label, data, err := Read(img)
			if err != nil {
				t.Fatal(err)
			}
			if label != tc.label {
				t.Errorf("label = %q, want %q", label, tc.label)
			}
			if !bytes.Equal(data, node) {
				t.Errorf("node.toml read back is %d bytes, differs from the %d written", len(data), len(node))
			}
			// Every time stamp is the epoch: the file's, and (ISO) the volume descriptors'.
			d, err := diskfs.Open(img, diskfs.WithOpenMode(diskfs.ReadOnly))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			fs, err := d.GetFilesystem(0)
			if err != nil {
				t.Fatal(err)
			}
			fi, err := fs.Stat(FileName)
			if err != nil {
				t.Fatal(err)
			}
			if !fi.ModTime().Equal(time.Unix(epoch, 0)) {
				t.Errorf("%s modified %v, want %v", FileName, fi.ModTime().UTC(), time.Unix(epoch, 0).UTC())
			}
			if tc.format == ISO {
				raw, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				pvd := raw[16*2048:]
				if got := string(pvd[813 : 813+16]); got != "2023111422132000" {
					t.Errorf("volume creation date %q, want 2023111422132000", got)
				}
				if got := string(pvd[40:72]); got != "INGOT-CONFIG"+strings.Repeat(" ", 20) {
					t.Errorf("volume identifier %q, want INGOT-CONFIG padded with spaces", got)
				}
			}
			if _, err := exec.LookPath("blkid"); err == nil {
				out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "LABEL", img).Output()
				if err != nil {
					t.Fatalf("blkid: %v", err)
				}
				if got := strings.TrimSpace(string(out)); got != tc.label {
					t.Errorf("blkid reads label %q, want %q", got, tc.label)
				}
			}
		})
	}
}

// TestReproducible: the same node.toml and epoch give the same bytes, seconds apart.
func TestReproducible(t *testing.T) {
	for _, f := range []Format{VFAT, ISO} {
		t.Run(string(f), func(t *testing.T) {
			dir := t.TempDir()
			var imgs [2][]byte
			for i := range imgs {
				p := filepath.Join(dir, "config.img")
				if err := Write(p, f, node, epoch); err != nil {
					t.Fatal(err)
				}
				var err error
				if imgs[i], err = os.ReadFile(p); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					// Let the wall clock move past a 2-second boundary (FAT's time resolution),
					// as a rebuild would see.
					time.Sleep(time.Until(time.Now().Truncate(2 * time.Second).Add(2 * time.Second)))
				}
			}
			if !bytes.Equal(imgs[0], imgs[1]) {
				for i := range imgs[0] {
					if imgs[0][i] != imgs[1][i] {
						t.Fatalf("two writes differ, first at byte %d", i)
					}
				}
				t.Fatalf("two writes differ in length: %d and %d", len(imgs[0]), len(imgs[1]))
			}
		})
	}
}

func TestWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	err := Write(filepath.Join(dir, "x.img"), "ext4", node, epoch)
	if err == nil || err.Error() != "config drive "+filepath.Join(dir, "x.img")+`: unknown format "ext4" (want vfat or iso)` {
		t.Errorf("ext4: %v", err)
	}
	big := make([]byte, MaxSize+1)
	err = Write(filepath.Join(dir, "big.img"), VFAT, big, epoch)
	if err == nil || !strings.Contains(err.Error(), "node.toml is 1048577 bytes, more than the 1048576 a config drive holds") {
		t.Errorf("too big: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.img")); !os.IsNotExist(err) {
		t.Errorf("a failed write left %s: %v", "x.img", err)
	}
}

// TestLargest: a node.toml of MaxSize fits a drive of either format and reads back whole. MaxSize
// is a multiple of the ISO block size on purpose: go-diskfs pads such a file over the next block.
func TestLargest(t *testing.T) {
	data := bytes.Repeat([]byte("# 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abc\n"), MaxSize/64)
	for _, f := range []Format{VFAT, ISO} {
		t.Run(string(f), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "config.img")
			if err := Write(img, f, data, epoch); err != nil {
				t.Fatal(err)
			}
			_, got, err := Read(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("read back %d bytes, differing from the %d written", len(got), len(data))
			}
			fi, _ := os.Stat(img)
			t.Logf("%s: %d-byte node.toml in a %d-byte image", f, len(data), fi.Size())
		})
	}
}
